// A video uploads through the page: the upload's own progress bar reaches 100%, then the job's
// progress and stages follow its `job` events to COMPLETED, and the thumbnail, metadata and
// subtitle links show.
//
// usage: node video.mjs <base_url> <token> <video_file>

import {
  DESKTOP, PHONE, check, layoutProblems, openApp, run, screenshot, signIn,
} from './lib.mjs';

const JOB_TIMEOUT_MS = Number(process.env.ECHO_VIDEO_JOB_TIMEOUT_MS || 120000);

await run(async ({ browser, problems, args }) => {
  const [base, token, file] = args;
  check(base && token && file, 'usage: video.mjs <base_url> <token> <video_file>');
  const { page } = await openApp(browser, base, problems, 'page', DESKTOP);
  await signIn(page, token);
  await page.getByRole('link', { name: 'Videos' }).click();
  await page.locator('#videos-title').waitFor();

  // Record every value the two progress bars take.
  await page.evaluate(() => {
    window.echoSeen = { upload: [], job: [], stages: new Set() };
    const sample = () => {
      const up = document.querySelector('#upload-progress');
      if (up && !document.querySelector('#upload-status').hidden) {
        const v = Number(up.value);
        if (window.echoSeen.upload.at(-1) !== v) window.echoSeen.upload.push(v);
      }
      const job = document.querySelector('.job .job-progress');
      if (job) {
        const v = Number(job.value);
        if (window.echoSeen.job.at(-1) !== v) window.echoSeen.job.push(v);
      }
      for (const li of document.querySelectorAll('.job .stage')) window.echoSeen.stages.add(li.dataset.stage);
    };
    new MutationObserver(sample).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    setInterval(sample, 20);
  });

  await page.getByLabel('Video file').setInputFiles(file);
  await page.getByRole('button', { name: 'Upload' }).click();
  await page.locator('#upload-percent', { hasText: '100%' }).waitFor();
  await page.locator('#upload-label', { hasText: 'processing (job' }).waitFor();
  const card = page.locator('.job').first();
  await card.waitFor();
  await page.locator('.job[data-status="COMPLETED"], .job[data-status="FAILED"], .job[data-status="CANCELLED"]')
    .first().waitFor({ timeout: JOB_TIMEOUT_MS });
  const status = await card.getAttribute('data-status');
  const error = await card.locator('.error').allTextContents();
  check(status === 'COMPLETED', `the job ended ${status}: ${error.join('; ')}`);
  await card.locator('.percent', { hasText: '100%' }).waitFor();

  const thumb = card.locator('img.thumbnail');
  await thumb.waitFor();
  await page.waitForFunction(() => {
    const img = document.querySelector('.job img.thumbnail');
    return img && img.complete && img.naturalWidth > 0;
  });
  const thumbnail = await thumb.evaluate((img) => ({ src: img.src, width: img.naturalWidth, height: img.naturalHeight, alt: img.alt }));
  const metadata = await card.locator('.metadata dt').allTextContents();
  const subtitles = await card.locator('.subtitles a').allTextContents();
  await card.locator('.subtitle-preview pre').waitFor();
  const subtitlePreview = await card.locator('.subtitle-preview pre').textContent();
  const seen = await page.evaluate(() => ({
    upload: window.echoSeen.upload, job: window.echoSeen.job, stages: [...window.echoSeen.stages],
  }));
  await thumb.scrollIntoViewIfNeeded();
  const desktop = await screenshot(page, 'video-desktop');
  const cardShot = await screenshot(card, 'video-job-card');
  await page.setViewportSize(PHONE);
  const layout = await layoutProblems(page);
  await thumb.scrollIntoViewIfNeeded();
  const phone = await screenshot(page, 'video-phone');
  check(layout.length === 0, `layout problems at 360 px:\n${layout.join('\n')}`);
  return { status, thumbnail, metadata, subtitles, subtitlePreview, seen, screenshots: [desktop, cardShot, phone] };
});
