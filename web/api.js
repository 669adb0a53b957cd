// The REST API (API.md) as seen from the page: JSON in, JSON out, FastAPI-shaped errors.

/** An HTTP error with the server's `detail` made readable. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(status, detail));
    this.status = status;
    this.detail = detail;
  }
}

function describe(status, detail) {
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => `${(d.loc || []).slice(1).join('.') || 'body'}: ${d.msg}`).join('; ');
  }
  if (status === 0) return 'The server cannot be reached.';
  return `Request failed (HTTP ${status}).`;
}

/** REST calls with the signed-in user's token. */
export class Api {
  /**
   * @param {() => string|null} token the current access token
   * @param {() => void} onUnauthorized called on any 401 (the token is no longer accepted)
   */
  constructor(token, onUnauthorized) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body) {
    const headers = { accept: 'application/json' };
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, null);
    }
    if (res.status === 204) return null;
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      if (res.status === 401 && token) this.onUnauthorized();
      throw new ApiError(res.status, data?.detail);
    }
    return data;
  }

  get(path) { return this.request('GET', path); }
  post(path, body) { return this.request('POST', path, body); }
  put(path, body) { return this.request('PUT', path, body); }
  delete(path) { return this.request('DELETE', path); }

  me() { return this.get('/users/me'); }
  user(id) { return this.get(`/users/${encodeURIComponent(id)}`); }
  chats() { return this.get('/chats/?limit=100'); }
  chat(id) { return this.get(`/chats/${encodeURIComponent(id)}`); }
  createChat(title) { return this.post('/chats/', title ? { title } : {}); }
  renameChat(id, title) { return this.put(`/chats/${encodeURIComponent(id)}`, { title }); }
  deleteChat(id) { return this.delete(`/chats/${encodeURIComponent(id)}`); }
  addMember(id, userId) {
    return this.post(`/chats/${encodeURIComponent(id)}/members`, { user_id: userId });
  }
  messages(id, query) {
    const q = new URLSearchParams(query).toString();
    return this.get(`/chats/${encodeURIComponent(id)}/messages/?${q}`);
  }
  job(id) { return this.get(`/api/v1/videos/jobs/${encodeURIComponent(id)}`); }
  recentJobs() {
    const q = ['PENDING', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED']
      .map((s) => `status=${s}`).join('&');
    return this.get(`/api/v1/jobs/?${q}&limit=20`);
  }
  cancelJob(id) { return this.post(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`); }

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

/** Reads a JWT's claims without verifying it (the server does that). */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}
