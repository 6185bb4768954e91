// jobq dashboard: live updates over server-sent events, and "select all" on dead letters.
// Every page works without this script; it only keeps pages current.
"use strict";

function followJobs(el) {
  const rows = document.getElementById("job-rows");
  const source = new EventSource(el.dataset.live);
  source.addEventListener("rows", (event) => {
    rows.innerHTML = event.data;
    el.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
  });
  source.onerror = () => { el.textContent = "Reconnecting…"; };
}

function followJob(el) {
  const bar = document.getElementById("job-progress");
  const text = document.getElementById("job-progress-text");
  const status = document.getElementById("job-status");
  const attempt = document.getElementById("job-attempt");
  let shown = status.textContent;
  const source = new EventSource(el.dataset.live);
  source.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    if (job.percent !== null) {
      bar.value = job.percent;
      text.textContent = Math.round(job.percent) + "%" + (job.message ? " · " + job.message : "");
    }
    attempt.textContent = job.attempt;
    if (job.status !== shown) {
      shown = job.status;
      status.textContent = job.status;
      status.className = "badge " + job.status;
    }
    if (["succeeded", "failed", "cancelled"].includes(job.status)) {
      source.close();
      location.reload();  // once: the finished job's result and attempts, rendered
    }
  });
}

function selectAll(box) {
  box.addEventListener("change", () => {
    for (const item of document.querySelectorAll('input[name="ids"]')) item.checked = box.checked;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const jobs = document.getElementById("live-state");
  if (jobs && jobs.dataset.live) followJobs(jobs);
  const job = document.getElementById("job-live");
  if (job && job.dataset.live) followJob(job);
  const all = document.getElementById("select-all");
  if (all) selectAll(all);
});
