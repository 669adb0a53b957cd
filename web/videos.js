// Videos: upload with a progress bar for the upload itself (XMLHttpRequest upload events),
// then the job's stages and progress live from `job` events on the user's feed, then the
// thumbnail, metadata and subtitles once it completes.

import { $, h, formatBytes, showError } from './dom.js';

const FINISHED = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);

/** The videos pane. */
export class VideoView {
  constructor({ api, realtime }) {
    this.api = api;
    this.realtime = realtime;
    /** Jobs by id, newest first when rendered. */
    this.jobs = new Map();
    /** Jobs whose details (video, metadata) were fetched after they finished. */
    this.detailed = new Set();
    /** The WebVTT subtitles of finished jobs, by job id (fetched once). */
    this.subtitles = new Map();
    this.loaded = false;
    this.upload = null;
    $('upload-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.startUpload();
    });
  }

  /** The pane became visible: load the job list once, and live jobs on every connect. */
  open() {
    if (!this.loaded) {
      this.loaded = true;
      this.loadRecent();
    }
    this.refreshLive();
    this.render();
  }

  async loadRecent() {
    try {
      const jobs = await this.api.recentJobs();
      for (const job of jobs || []) this.merge(job, true);
      showError($('jobs-error'), '');
    } catch (e) {
      showError($('jobs-error'), `Could not load your videos: ${e.message}`);
    }
    this.render();
  }

  /** `jobs` over the socket: the pending and processing ones, as they are now. */
  refreshLive() {
    if (!this.loaded || this.realtime.state !== 'online') return;
    this.realtime.jobs().then((jobs) => {
      for (const job of jobs) this.merge(job, false);
      this.render();
    }).catch(() => {
      // Not connected, or the server has no video jobs: the REST list stands.
    });
  }

  /** A `job` event from the feed. */
  onJob(job) {
    if (!job || job.id === undefined) return;
    this.merge(job, false);
    this.render();
  }

  merge(job, detailed) {
    const old = this.jobs.get(job.id) || {};
    const merged = { ...old, ...job };
    // Feed events carry no `video`/`video_metadata`: keep what the REST answer gave.
    if (!job.video && old.video) merged.video = old.video;
    if (!job.video_metadata && old.video_metadata) merged.video_metadata = old.video_metadata;
    // Progress updates may race a status change; a finished job does not go back.
    if (FINISHED.has(old.status) && !FINISHED.has(job.status)) {
      merged.status = old.status;
      merged.progress = old.progress;
    }
    this.jobs.set(job.id, merged);
    if (detailed && FINISHED.has(merged.status)) this.detailed.add(job.id);
    if (FINISHED.has(merged.status) && !this.detailed.has(job.id)) this.fetchDetails(job.id);
  }

  async fetchDetails(id) {
    this.detailed.add(id);
    try {
      const job = await this.api.job(id);
      this.merge(job, true);
      this.render();
    } catch (e) {
      this.detailed.delete(id);
      showError($('jobs-error'), `Could not load job ${id}: ${e.message}`);
    }
  }

  startUpload() {
    const input = $('video-file');
    const file = input.files?.[0];
    if (!file || this.upload) return;
    const button = $('upload-button');
    const status = $('upload-status');
    const bar = $('upload-progress');
    const percent = $('upload-percent');
    const label = $('upload-label');
    showError($('upload-error'), '');
    status.hidden = false;
    bar.value = 0;
    percent.textContent = '0%';
    label.textContent = `Uploading ${file.name} (${formatBytes(file.size)})…`;
    button.disabled = true;
    const show = (loaded, total) => {
      const p = total ? Math.min(100, Math.round((loaded / total) * 100)) : 0;
      bar.value = p;
      percent.textContent = `${p}%`;
    };
    this.upload = this.api.uploadVideo(file, show);
    this.upload.promise.then((res) => {
      show(1, 1);
      label.textContent = `Uploaded ${file.name}: processing (job ${res.job_id})`;
      input.value = '';
      this.loaded = true;
      this.merge({
        id: res.job_id,
        video_id: res.video_id,
        status: res.status || 'PENDING',
        progress: 0,
        stage: null,
        processing_stages: null,
        video: { id: res.video_id, original_filename: file.name, size_bytes: file.size },
      }, false);
      this.render();
      // The job may have moved on before its first event reached us.
      this.api.job(res.job_id).then((job) => {
        this.merge(job, FINISHED.has(job.status));
        this.render();
      }).catch(() => {});
    }).catch((e) => {
      label.textContent = `Upload of ${file.name} failed`;
      showError($('upload-error'), e.message);
    }).finally(() => {
      this.upload = null;
      button.disabled = false;
    });
  }

  /**
   * The first cues of a job's WebVTT file, fetched once. Only same-origin URLs are read (local
   * storage); others (GCS) stay links, as their host need not allow this page to fetch them.
   */
  subtitlePreview(jobId, meta) {
    if (this.subtitles.has(jobId)) return this.subtitles.get(jobId);
    const url = meta.subtitle_files_urls?.vtt;
    if (!url) return null;
    let sameOrigin = false;
    try { sameOrigin = new URL(url, location.href).origin === location.origin; } catch { sameOrigin = false; }
    if (!sameOrigin) return null;
    this.subtitles.set(jobId, null);
    fetch(url).then((res) => (res.ok ? res.text() : null)).then((text) => {
      if (!text) return;
      const cues = text.replace(/^WEBVTT[^\n]*\n+/, '').trim().split(/\n{2,}/).slice(0, 8);
      this.subtitles.set(jobId, cues.join('\n\n'));
      this.render();
    }).catch(() => {});
    return null;
  }

  async cancelJob(id, button) {
    button.disabled = true;
    try {
      const job = await this.api.cancelJob(id);
      if (job) this.merge(job, false);
    } catch (e) {
      showError($('jobs-error'), `Could not cancel job ${id}: ${e.message}`);
    }
    this.render();
  }

  render() {
    const ul = $('job-list');
    const jobs = [...this.jobs.values()].sort((a, b) => b.id - a.id);
    $('jobs-empty').hidden = jobs.length > 0 || !this.loaded;
    const existing = new Map([...ul.children].map((li) => [li.dataset.jobId, li]));
    jobs.forEach((job, i) => {
      const key = String(job.id);
      const li = this.renderJob(job, existing.get(key));
      existing.delete(key);
      if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] || null);
    });
    for (const li of existing.values()) li.remove();
  }

  renderJob(job, li) {
    const name = job.video?.original_filename || `Video ${job.video_id}`;
    const progress = Math.max(0, Math.min(100, Number(job.progress) || (job.status === 'COMPLETED' ? 100 : 0)));
    const progressId = `job-progress-${job.id}`;
    const children = [
      h('div', { class: 'job-head' },
        h('strong', { class: 'job-file', text: name }),
        h('span', { class: `status status-${String(job.status).toLowerCase()}`, text: job.status })),
      h('div', { class: 'job-progress-row' },
        h('label', { for: progressId, text: job.stage && !FINISHED.has(job.status) ? `Stage: ${job.stage}` : 'Progress' }),
        h('progress', { id: progressId, class: 'job-progress', max: 100, value: progress }),
        h('span', { class: 'percent', text: `${progress}%` })),
    ];
    // In the order they ran; those not started yet last.
    const stages = Object.entries(job.processing_stages || {}).sort(([an, a], [bn, b]) => {
      const at = a?.started_at || '~';
      const bt = b?.started_at || '~';
      return at === bt ? an.localeCompare(bn) : at.localeCompare(bt);
    });
    if (stages.length) {
      children.push(h('ul', { class: 'stages', 'aria-label': 'Processing stages' },
        stages.map(([stage, s]) => h('li', { class: `stage stage-${String(s?.status || '').toLowerCase()}`, dataset: { stage } },
          h('span', { class: 'stage-name', text: stage }),
          h('span', { class: 'stage-state', text: `${s?.status ?? ''}${Number.isFinite(s?.progress) ? ` ${s.progress}%` : ''}` }),
          s?.error ? h('span', { class: 'error', text: s.error }) : null))));
    }
    if (job.error_message) children.push(h('p', { class: 'error', text: job.error_message }));
    const meta = job.video_metadata;
    if (meta) {
      children.push(renderMetadata(meta, name));
      const vtt = this.subtitlePreview(job.id, meta);
      if (vtt) {
        children.push(h('details', { class: 'subtitle-preview', open: true },
          h('summary', { text: 'Subtitles' }), h('pre', { text: vtt })));
      }
    }
    if (!FINISHED.has(job.status)) {
      children.push(h('button', {
        type: 'button', class: 'secondary small', onclick: (e) => this.cancelJob(job.id, e.currentTarget),
      }, 'Cancel job'));
    }
    const node = h('li', { class: 'job card', dataset: { jobId: String(job.id), status: job.status } }, children);
    if (!li) return node;
    // Keep the thumbnail element when it has not changed, so it does not flash on each event.
    const oldImg = li.querySelector('img.thumbnail');
    const newImg = node.querySelector('img.thumbnail');
    if (oldImg && newImg && oldImg.getAttribute('src') === newImg.getAttribute('src')) newImg.replaceWith(oldImg);
    li.replaceChildren(...node.childNodes);
    li.dataset.status = job.status;
    return li;
  }
}

function renderMetadata(meta, name) {
  const rows = [];
  const add = (label, value) => {
    if (value === null || value === undefined || value === '') return;
    rows.push(h('dt', { text: label }), h('dd', { text: String(value) }));
  };
  add('Title', meta.title);
  add('Description', meta.description);
  if (Array.isArray(meta.tags) && meta.tags.length) add('Tags', meta.tags.join(', '));
  if (Number.isFinite(meta.extracted_video_duration_seconds)) {
    add('Duration', `${meta.extracted_video_duration_seconds.toFixed(1)} s`);
  }
  add('Resolution', meta.extracted_video_resolution);
  add('Format', meta.extracted_video_format);
  const subs = meta.subtitle_files_urls || {};
  const links = Object.entries(subs).filter(([, url]) => typeof url === 'string' && url)
    .map(([kind, url]) => h('a', { href: url, download: '', rel: 'noopener', text: kind.toUpperCase() }));
  return h('div', { class: 'job-result' },
    meta.thumbnail_file_url
      ? h('img', { class: 'thumbnail', src: meta.thumbnail_file_url, alt: `Thumbnail of ${name}` })
      : null,
    rows.length ? h('dl', { class: 'metadata' }, rows) : null,
    links.length ? h('p', { class: 'subtitles' }, 'Subtitles: ', links.flatMap((a, i) => (i ? [' · ', a] : [a]))) : null,
    meta.transcript_text
      ? h('details', { class: 'transcript' }, h('summary', { text: 'Transcript' }), h('p', { text: meta.transcript_text }))
      : null,
    meta.show_notes_text
      ? h('details', { class: 'show-notes' }, h('summary', { text: 'Show notes' }), h('p', { text: meta.show_notes_text }))
      : null);
}
