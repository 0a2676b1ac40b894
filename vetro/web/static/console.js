// Progressive enhancement only: every page works without it.
(function () {
  "use strict";

  // An operation's page follows its progress from the API.
  const operation = document.querySelector("[data-operation]");
  if (operation) {
    const id = operation.dataset.operation;
    const active = new Set(["running", "stopping"]);
    const set = (name, value) => document.querySelectorAll(`[data-field="${name}"]`).forEach((element) => {
      if (element.tagName === "PROGRESS") element.value = value; else element.textContent = value;
    });
    const poll = async () => {
      try {
        const response = await fetch(`/api/operations/${id}`, { headers: { accept: "application/json" } });
        if (response.ok) {
          const shown = await response.json();
          ["state", "done", "refused"].forEach((name) => set(name, shown[name]));
          set("error", shown.error || "");
          set("progress", shown.done);
          if (!active.has(shown.state)) {
            const stop = document.getElementById("stop");
            if (stop) stop.remove();
            return;
          }
        }
      } catch (error) { /* the next poll tries again */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }

  // A page marked data-refresh="N" shows what changed every N seconds, unless the operator is busy with it
  // (typing in a field, a section unfolded, text selected).
  const main = document.querySelector("main[data-refresh]");
  if (main) {
    const seconds = Math.max(2, Number(main.dataset.refresh) || 10);
    const busy = () => {
      const focused = document.activeElement;
      return (focused && focused !== document.body && main.contains(focused)) ||
        main.querySelector("details[open]") || String(window.getSelection() || "") !== "";
    };
    const refresh = async () => {
      if (!document.hidden && !busy()) {
        try {
          // X-Vetro-Refresh: the server may answer what it read for another viewer a moment ago (vetro.web.shared).
          const headers = { accept: "text/html", "x-vetro-refresh": "1" };
          const response = await fetch(window.location.href, { headers });
          if (response.ok && !response.redirected) {
            const page = new DOMParser().parseFromString(await response.text(), "text/html");
            const fresh = page.querySelector("main");
            if (fresh && !busy()) main.innerHTML = fresh.innerHTML;
          }
        } catch (error) { /* the next refresh tries again */ }
      }
      setTimeout(refresh, seconds * 1000);
    };
    setTimeout(refresh, seconds * 1000);
  }
})();
