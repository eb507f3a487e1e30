from django.urls import path

from streamstore.django import serve

from . import views

urlpatterns = [
    path("upload", views.upload),
    path("small", views.small),
    path("big", views.big),
    path("images", views.images),
    path("document", views.document),
    path("plain", views.plain),
    path("token", views.token),
    path("media/<str:name>", serve, {"storage": "default"}),
]
