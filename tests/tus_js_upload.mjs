// Uploads one file with tus-js-client under Node.js and prints JSON events,
// one per line: {"event": "url" | "progress" | "success" | "error", ...}.
//
//   node tests/tus_js_upload.mjs '{"endpoint": ..., "path": ..., "chunkSize": ...}'
//
// Options: endpoint, path, chunkSize, uploadUrl (resume this upload),
// metadata, uploadLengthDeferred, parallelUploads, uploadDataDuringCreation,
// retryDelays (default: none), progressEvery (bytes between progress events),
// stream (read the file as a plain stream: needed with uploadLengthDeferred).
import fs from 'node:fs'
import { createRequire } from 'node:module'
import { PassThrough } from 'node:stream'

const require = createRequire(process.env.NODE_PATH + '/')
const tus = require('tus-js-client')

const options = JSON.parse(process.argv[2])
const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')
const progressEvery = options.progressEvery ?? 1024 * 1024
let lastProgress = -progressEvery

// A plain readable stream (stream: true) is read once, front to back, as a
// stream of unknown length is; a file stream is re-read per chunk.
const input = options.stream
  ? fs.createReadStream(options.path).pipe(new PassThrough())
  : fs.createReadStream(options.path)
const upload = new tus.Upload(input, {
  endpoint: options.endpoint,
  uploadUrl: options.uploadUrl ?? null,
  chunkSize: options.chunkSize ?? Number.POSITIVE_INFINITY,
  metadata: options.metadata ?? {},
  uploadLengthDeferred: options.uploadLengthDeferred ?? false,
  uploadDataDuringCreation: options.uploadDataDuringCreation ?? false,
  parallelUploads: options.parallelUploads ?? 1,
  retryDelays: options.retryDelays ?? null,
  storeFingerprintForResuming: false,
  onUploadUrlAvailable: () => emit({ event: 'url', url: upload.url }),
  onProgress: (sent, total) => {
    if (sent - lastProgress >= progressEvery || sent === total) {
      lastProgress = sent
      emit({ event: 'progress', sent, total })
    }
  },
  onChunkComplete: (size, accepted, total) => emit({ event: 'chunk', size, accepted, total }),
  onSuccess: () => emit({ event: 'success', url: upload.url }),
  onError: (error) => {
    emit({ event: 'error', message: String(error), status: error.originalResponse?.getStatus() ?? null })
    process.exitCode = 1
  },
})
upload.start()
