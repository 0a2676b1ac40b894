// Progressive enhancement only: every page works without it. An operation's page follows its progress.
(function () {
  "use strict";
  const node = document.querySelector("[data-operation]");
  if (!node) return;
  const id = node.dataset.operation;
  const active = new Set(["running", "stopping"]);
  const set = (name, value) => document.querySelectorAll(`[data-field="${name}"]`).forEach((element) => {
    if (element.tagName === "PROGRESS") element.value = value; else element.textContent = value;
  });
  async function poll() {
    try {
      const response = await fetch(`/api/operations/${id}`, { headers: { accept: "application/json" } });
      if (!response.ok) return;
      const operation = await response.json();
      set("state", operation.state);
      set("done", operation.done);
      set("refused", operation.refused);
      set("error", operation.error || "");
      set("progress", operation.done);
      if (!active.has(operation.state)) {
        const stop = document.getElementById("stop");
        if (stop) stop.remove();
        return;
      }
    } catch (error) { /* the next poll tries again */ }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
