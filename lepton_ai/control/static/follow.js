// Follows a running job's log: asks the API for what was written after the offset already shown, once a
// second, until the job has ended; then reloads once so the state, attempts and buttons are final.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log || log.dataset.done === "true") return;
  let offset = Number(log.dataset.offset);
  async function poll() {
    try {
      const r = await fetch(`/api/v1/jobs/${log.dataset.job}/log?offset=${offset}`, {credentials: "same-origin"});
      if (r.ok) {
        const body = await r.json();
        if (body.text) log.append(document.createTextNode(body.text));
        offset = body.offset;
        if (body.done) { window.location.reload(); return; }
      }
    } catch (e) {
      // the dashboard restarting or the network blinking: try again on the next tick
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
