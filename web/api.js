// The REST API (API.md) as seen from the page: the client library's REST helpers on this
// page's server, plus uploads with progress (XMLHttpRequest) and the job list the page shows.

import { ApiError, EchoRest, tokenClaims } from './echo-client.js';

export { ApiError, tokenClaims };

/** REST calls with the signed-in user's token. */
export class Api extends EchoRest {
  /**
   * @param {() => string|null} token the current access token
   * @param {() => void} onUnauthorized called on any 401 (the token is no longer accepted)
   */
  constructor(token, onUnauthorized) {
    super({ baseUrl: location.origin, getToken: token, onUnauthorized: () => onUnauthorized() });
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  recentJobs() {
    return this.jobs({ status: ['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED'], limit: 20 });
  }

  /**
   * Uploads a video with XMLHttpRequest, whose upload events (unlike fetch's) report progress.
   * @param {File} file
   * @param {(loaded: number, total: number) => void} onProgress
   * @returns {{promise: Promise<object>, abort: () => void}}
   */
  uploadVideo(file, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open('POST', '/api/v1/videos/upload');
      const token = this.token();
      if (token) xhr.setRequestHeader('authorization', `Bearer ${token}`);
      xhr.setRequestHeader('accept', 'application/json');
      xhr.responseType = 'text';
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      });
      xhr.upload.addEventListener('load', () => onProgress(file.size, file.size));
      xhr.addEventListener('load', () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else {
          if (xhr.status === 401) this.onUnauthorized();
          reject(new ApiError(xhr.status, data?.detail));
        }
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, null)));
      xhr.addEventListener('abort', () => reject(new ApiError(0, 'Upload cancelled.')));
      const form = new FormData();
      form.append('file', file, file.name);
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
  }
}
