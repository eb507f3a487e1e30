"""A small Django project for the streamstore.django tests (in-process and real servers).

``DJANGO_SETTINGS_MODULE=djproject.settings`` with ``tests/`` on ``sys.path``;
``STREAMSTORE_TEST_MEDIA`` names the store's root for a server process.
"""
