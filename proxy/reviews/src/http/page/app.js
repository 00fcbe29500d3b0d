// hoop reviews page. Everything shown comes from the API and may be
// attacker-controlled (SQL text, subjects, reasons): it is only ever put
// into the page with textContent / setAttribute, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "hoop.reviews.token";
  const API = "api/reviews";
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);

  let reviews = [];
  let selected = decodeHash();
  let shownControlsFor = null;
  let streamAbort = null;
  let streamLive = false;
  let refreshing = false;
  let refreshAgain = false;

  function decodeHash() {
    const id = decodeURIComponent(location.hash.replace(/^#/, ""));
    return /^[A-Za-z0-9_-]{1,64}$/.test(id) ? id : null;
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setConnection(text, isError) {
    const node = $("connection");
    node.textContent = text;
    node.className = isError ? "error" : "muted";
  }

  function setMessage(text, kind) {
    const node = $("message");
    node.textContent = text;
    node.className = kind || "";
  }

  async function call(method, path, body) {
    const headers = { Authorization: "Bearer " + token() };
    const init = { method: method, headers: headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, attributes, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function when(text) {
    if (!text) return "";
    const date = new Date(text);
    return isNaN(date) ? String(text) : date.toLocaleString();
  }

  function remaining(text) {
    const ms = new Date(text) - Date.now();
    if (isNaN(ms)) return "";
    if (ms <= 0) return "now";
    const s = Math.round(ms / 1000);
    return s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
  }

  function short(text, max) {
    const value = String(text || "");
    return value.length > max ? value.slice(0, max - 1) + "…" : value;
  }

  function row(review, lastCell) {
    const tr = el("tr", {
      "data-testid": "review-row",
      "data-review-id": review.id,
      "data-status": review.status,
    }, [
      el("td", { text: when(review.created_at) }),
      el("td", { text: review.subject }),
      el("td", { text: review.rule }),
      el("td", { class: "sql", text: short(review.sql, 140) }),
      lastCell,
    ]);
    if (review.id === selected) tr.classList.add("selected");
    tr.addEventListener("click", () => select(review.id));
    return tr;
  }

  function renderLists() {
    const pending = reviews.filter((r) => r.status === "pending");
    const recent = reviews.filter((r) => r.status !== "pending").slice(0, 50);
    $("pending-body").replaceChildren(
      ...pending.map((r) => row(r, el("td", { text: remaining(r.expires_at) }))),
    );
    $("recent-body").replaceChildren(
      ...recent.map((r) => row(r, el("td", {}, [
        el("span", { class: "badge status-" + r.status, text: r.status }),
      ]))),
    );
    $("pending-count").textContent = String(pending.length);
    $("pending-empty").hidden = pending.length > 0;
  }

  function fact(term, value) {
    return [el("dt", { text: term }), el("dd", { text: value == null ? "" : String(value) })];
  }

  function renderDetail(review) {
    const section = $("detail");
    if (!review) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    section.setAttribute("data-review-id", review.id);
    section.setAttribute("data-status", review.status);
    $("detail-id").textContent = review.id;
    const badge = $("detail-status");
    badge.textContent = review.status;
    badge.className = "badge status-" + review.status;
    const approvals = (review.decisions || []).filter((d) => d.action !== "deny").length;
    $("detail-facts").replaceChildren(
      ...fact("who", review.subject),
      ...fact("groups", (review.groups || []).join(", ")),
      ...fact("role", review.role),
      ...fact("from", review.client_addr),
      ...fact("session", review.session_id),
      ...fact("rule", review.rule),
      ...fact("why", review.reason),
      ...fact("tables", (review.tables || []).join(", ")),
      ...fact("created", when(review.created_at)),
      ...fact(review.status === "pending" ? "expires in" : "expired at",
        review.status === "pending" ? remaining(review.expires_at) : when(review.expires_at)),
      ...fact("approvals needed", review.min_approvals + " (so far " + approvals + ")"),
      ...(review.grant_until ? fact("grant until", when(review.grant_until)) : []),
      ...(review.withdrawn_reason ? fact("withdrawn", review.withdrawn_reason) : []),
    );
    $("detail-sql").textContent = review.sql;
    $("detail-modified-block").hidden = !review.modified_sql;
    $("detail-modified").textContent = review.modified_sql || "";
    $("detail-decisions").replaceChildren(...(review.decisions || []).map((d) => {
      let text = when(d.at) + " — " + d.reviewer + " " + d.action;
      if (d.grant_for) text += " (grant " + d.grant_for + ")";
      if (d.reason) text += ": " + d.reason;
      return el("li", { "data-testid": "decision", text: text });
    }));
    const controls = $("controls");
    controls.hidden = review.status !== "pending";
    if (shownControlsFor !== review.id) {
      // Only when another review is opened: never wipe what is being typed.
      shownControlsFor = review.id;
      $("reason").value = "";
      $("grant-for").value = "";
      $("modify-sql").value = review.modified_sql || review.sql;
      setMessage("");
    }
  }

  async function refresh() {
    if (!token()) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    try {
      const data = await call("GET", API);
      reviews = data.reviews || [];
      renderLists();
      let review = reviews.find((r) => r.id === selected);
      if (!review && selected) {
        try {
          review = await call("GET", API + "/" + encodeURIComponent(selected));
        } catch (error) {
          if (error.status !== 404) throw error;
          setMessage("No review " + selected + ".", "error");
        }
      }
      renderDetail(review || null);
      setConnection(streamLive ? "live" : "polling every 2 s", false);
    } catch (error) {
      setConnection(error.message, true);
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        refresh();
      }
    }
  }

  function select(id) {
    selected = id;
    if (location.hash !== "#" + id) history.replaceState(null, "", "#" + id);
    refresh();
  }

  async function decide(action, body) {
    if (!selected) return;
    const buttons = ["approve", "deny", "modify"].map($);
    buttons.forEach((b) => { b.disabled = true; });
    setMessage("sending…");
    try {
      const review = await call("POST", API + "/" + encodeURIComponent(selected) + "/" + action, body);
      setMessage("Review " + review.id + " is " + review.status + ".", "ok");
    } catch (error) {
      setMessage(error.message, "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
      refresh();
    }
  }

  function reasonValue() {
    const reason = $("reason").value.trim();
    return reason ? reason : undefined;
  }

  // Server-Sent Events read through fetch, so the token travels in the
  // Authorization header (EventSource cannot send it). Polling covers any gap.
  async function stream() {
    if (streamAbort) streamAbort.abort();
    if (!token()) return;
    const abort = new AbortController();
    streamAbort = abort;
    try {
      const response = await fetch(API + "/events", {
        headers: { Authorization: "Bearer " + token() },
        cache: "no-store",
        signal: abort.signal,
      });
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      streamLive = true;
      setConnection("live", false);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        const events = buffered.split("\n\n");
        buffered = events.pop();
        if (events.some((e) => /^event: (review|resync)$/m.test(e))) refresh();
      }
    } catch (_) {
      // Fall through: reconnect below, poll meanwhile.
    }
    if (streamAbort === abort) {
      streamLive = false;
      setTimeout(stream, 3000);
    }
  }

  function start() {
    $("token").value = token() ? "********" : "";
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (value && value !== "********") sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = token() ? "********" : "";
      setConnection("connecting…", false);
      stream();
      refresh();
    });
    $("token-clear").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      if (streamAbort) streamAbort.abort();
      streamAbort = null;
      streamLive = false;
      $("token").value = "";
      reviews = [];
      renderLists();
      renderDetail(null);
      setConnection("no token yet", false);
    });
    $("approve").addEventListener("click", () => {
      const grant = $("grant-for").value;
      decide("approve", { reason: reasonValue(), grant_for: grant ? grant : undefined });
    });
    $("deny").addEventListener("click", () => decide("deny", { reason: reasonValue() }));
    $("modify").addEventListener("click", () => decide("modify", { sql: $("modify-sql").value, reason: reasonValue() }));
    window.addEventListener("hashchange", () => {
      const id = decodeHash();
      if (id) select(id);
    });
    // Without the stream: poll. With it: still refresh now and then, so
    // countdowns move and expiries show.
    let ticks = 0;
    setInterval(() => {
      ticks += 1;
      if (!streamLive || ticks % 5 === 0) refresh();
      else renderLists();
    }, POLL_MS);
    if (token()) {
      stream();
      refresh();
    }
  }

  start();
})();
