// architect dashboard: live updates from /events (server-sent events), the write
// actions (approve, deny, cancel, retry) and, on a task's page, its recordings played
// with asciinema-player (vendored, served by the binary, loaded by that page only).
"use strict";
(function () {
  const live = document.getElementById("live");
  const flash = document.getElementById("flash");
  const page = document.body.dataset.page;
  let received = 0;

  function say(text, ok) {
    flash.hidden = false;
    flash.textContent = text;
    flash.className = ok ? "ok" : "bad";
  }

  // Counts on the fleet page, from /api/status (at most one request in flight).
  let refreshing = false;
  async function refreshCounts() {
    if (refreshing) return;
    refreshing = true;
    try {
      const r = await fetch("/api/status", { credentials: "same-origin" });
      if (!r.ok) return;
      const s = await r.json();
      for (const [k, v] of Object.entries(s.tasks || {})) {
        const el = document.querySelector('[data-count="' + k + '"]');
        if (el) el.textContent = v;
      }
    } finally {
      refreshing = false;
    }
  }

  // The sessions' screens and states on the fleet page, from /api/screens every 2 s
  // (the previews are read from the recordings, which the daemon flushes every second).
  let screening = false;
  async function refreshScreens() {
    if (screening || document.hidden) return;
    screening = true;
    try {
      const r = await fetch("/api/screens", { credentials: "same-origin" });
      if (!r.ok) return;
      const all = await r.json();
      for (const [key, s] of Object.entries(all)) {
        const pre = document.querySelector('pre[data-screen="' + CSS.escape(key) + '"]');
        if (!pre) continue;
        if (pre.textContent !== s.screen) pre.textContent = s.screen;
        const name = key.slice(key.indexOf("/") + 1);
        const st = document.querySelector('[data-session-state="' + CSS.escape(name) + '"]');
        if (st && st.textContent !== s.state) {
          st.textContent = s.state;
          st.className = "state " + s.state;
        }
        const task = document.querySelector('[data-session-task="' + CSS.escape(name) + '"]');
        if (task && task.textContent !== (s.task || "")) {
          task.replaceChildren();
          if (s.task) {
            const link = document.createElement("a");
            link.href = "/tasks/" + encodeURIComponent(s.task);
            link.textContent = s.task;
            task.append(link);
          }
        }
      }
    } finally {
      screening = false;
    }
  }
  if (page === "fleet") setInterval(refreshScreens, 2000);

  function feed(ev) {
    const list = document.getElementById("live-feed");
    if (!list || !ev.task_id) return;
    const li = document.createElement("li");
    li.dataset.task = ev.task_id;
    li.dataset.type = ev.type;
    const a = document.createElement("a");
    a.href = "/tasks/" + encodeURIComponent(ev.task_id);
    a.textContent = ev.task_id;
    li.append(new Date(ev.ts).toLocaleTimeString() + " ", a,
      " " + ev.type.replace("task_", "") + (ev.session ? " on " + ev.session : ""));
    list.prepend(li);
  }

  // Each [data-cast] element (a task's recording) becomes a player, paused on its first
  // frame until its play button is pressed.
  for (const el of document.querySelectorAll("[data-cast]")) {
    if (!window.AsciinemaPlayer) {
      el.textContent = "the player did not load: use the link above";
      continue;
    }
    AsciinemaPlayer.create(el.dataset.cast, el, {
      preload: true,
      fit: "width",
      idleTimeLimit: 2,
    });
  }

  const FINAL = ["task_completed", "task_failed", "task_cancelled"];
  const es = new EventSource("/events");
  es.onopen = () => { live.textContent = "live · " + received + " events"; live.className = "on"; };
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "off"; };
  es.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    received += 1;
    live.dataset.events = String(received);
    live.textContent = "live · " + received + " events";
    const type = ev.type || "";
    if (page === "fleet") {
      if (FINAL.includes(type)) feed(ev);
      if (type.startsWith("task_") || type.startsWith("session_")) refreshCounts();
    } else if (page === "approvals" && (type === "approval_needed" || type === "permission_decided")) {
      if (!document.querySelector("button[disabled]")) location.reload();
    } else if (page === "tasks" && FINAL.includes(type)) {
      const here = decodeURIComponent(location.pathname.split("/")[2] || "");
      if (here === ev.task_id || here === "") location.reload();
    }
  };

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let j = {};
    try { j = await r.json(); } catch (_) { j = { ok: false, error: r.status + " " + (await r.text().catch(() => "")) }; }
    if (r.status === 401) j = { ok: false, error: "not logged in: open the login URL `architect serve` printed" };
    return j;
  }

  document.addEventListener("click", async (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    let res;
    if (b.dataset.answer) {
      b.disabled = true;
      res = await post("/api/answer", {
        session: b.dataset.session,
        question: b.dataset.question,
        approve: b.dataset.answer === "approve",
      });
      const row = b.closest("tr");
      if (row && res.ok) {
        row.dataset.answered = b.dataset.answer;
        row.querySelectorAll("button").forEach((x) => (x.disabled = true));
      } else {
        b.disabled = false;
      }
    } else if (b.dataset.action) {
      res = await post("/api/tasks/" + encodeURIComponent(b.dataset.task) + "/" + b.dataset.action);
    } else {
      return;
    }
    say(res.ok ? res.message : res.error, res.ok);
  });
})();
