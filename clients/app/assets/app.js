// Progressive enhancement only: every screen works without this file.
// - Keeps the sync badge current (polls /status.json).
// - Live meeting editors: saves as you pause, shows a colleague's typing as it arrives, and never
//   overwrites a field you are in the middle of changing (the server merges what you send with
//   what arrived, so both keep their words).
// - Adds a Print button to the network copy.
(function () {
  'use strict';
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';

  // ---------------------------------------------------------------- error summary
  // As the design system does: move focus to the summary so keyboard and screen reader users
  // land on the list of problems, each linking to its field.
  var summary = document.getElementById('error-summary');
  if (summary) summary.focus();

  // ---------------------------------------------------------------- sync badge
  var badge = document.getElementById('sync-status');
  function refreshStatus() {
    fetch('/status.json', { headers: { Accept: 'application/json' }, cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) {
        if (!s || !badge) return;
        var doc = new DOMParser().parseFromString(s.html, 'text/html');
        var fresh = doc.getElementById('sync-status');
        if (fresh && fresh.innerHTML !== badge.innerHTML) {
          badge.innerHTML = fresh.innerHTML;
        }
        if (fresh) {
          badge.setAttribute('data-state', fresh.getAttribute('data-state'));
          badge.setAttribute('data-unsynced', fresh.getAttribute('data-unsynced'));
        }
        Object.keys(s.cases || {}).forEach(function (id) {
          var cell = document.querySelector('[data-case="' + id + '"] [data-sync]') ||
            document.querySelector('#case-sync[data-case="' + id + '"]');
          if (cell && cell.innerHTML !== s.cases[id].tag) cell.innerHTML = s.cases[id].tag;
        });
      })
      .catch(function () { /* the app itself stopped: nothing to update */ });
  }
  if (badge) setInterval(refreshStatus, 2000);

  // ---------------------------------------------------------------- live editors
  var live = document.querySelector('.app-live[data-live-url]');
  if (live) {
    var url = live.getAttribute('data-live-url');
    var gen = live.getAttribute('data-gen');
    var status = document.getElementById('live-status');
    var fields = {};
    function say(text) { if (status && status.textContent !== text) status.textContent = text; }

    Array.prototype.forEach.call(live.querySelectorAll('textarea[data-live-kind]'), function (ta) {
      var kind = ta.getAttribute('data-live-kind');
      var baseInput = live.querySelector('input[data-base-for="' + kind + '"]');
      var st = { ta: ta, kind: kind, base: ta.value, baseInput: baseInput, pending: false, timer: null };
      fields[kind] = st;
      ta.addEventListener('input', function () {
        clearTimeout(st.timer);
        st.timer = setTimeout(function () { save(st); }, 700);
      });
      ta.form.addEventListener('submit', function (e) {
        e.preventDefault();
        clearTimeout(st.timer);
        save(st);
      });
    });

    function setBase(st, text) {
      st.base = text;
      if (st.baseInput) st.baseInput.value = text;
    }

    // Replace a field's text, keeping the caret where the user left it.
    function apply(ta, text) {
      if (ta.value === text) return;
      if (document.activeElement !== ta) { ta.value = text; return; }
      var old = ta.value, s = ta.selectionStart, e = ta.selectionEnd, p = 0;
      while (p < old.length && p < text.length && old[p] === text[p]) p++;
      var delta = text.length - old.length;
      ta.value = text;
      var ns = s <= p ? s : Math.max(p, s + delta), ne = e <= p ? e : Math.max(p, e + delta);
      ta.setSelectionRange(ns, ne);
    }

    function save(st) {
      if (st.pending) { clearTimeout(st.timer); st.timer = setTimeout(function () { save(st); }, 300); return; }
      var sent = st.ta.value;
      if (sent === st.base) return;
      st.pending = true;
      say('Saving…');
      var body = new URLSearchParams();
      body.set('_csrf', csrf);
      body.set('kind', st.kind);
      body.set('base', st.base);
      body.set('text', sent);
      fetch(url, {
        method: 'POST',
        headers: { Accept: 'application/json', 'X-CSRF-Token': csrf, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: body.toString()
      })
        .then(function (r) { return r.json(); })
        .then(function (res) {
          st.pending = false;
          if (!res.ok) { say('Not saved: ' + res.error); return; }
          if (st.ta.value === sent) {
            apply(st.ta, res.text);
            setBase(st, res.text);
          } else {
            // Typed more while saving: what was sent is merged; send the rest next.
            setBase(st, sent);
            clearTimeout(st.timer);
            st.timer = setTimeout(function () { save(st); }, 300);
          }
          say('Saved on this device');
        })
        .catch(function () { st.pending = false; say('Not saved: the app did not answer. Try again.'); });
    }

    // Leaving the page (a link, closing the lid) must not lose the last words typed before the
    // pause that would have saved them: send them with a beacon, which outlives the page.
    function flushAll() {
      Object.keys(fields).forEach(function (kind) {
        var st = fields[kind];
        if (st.ta.value === st.base) return;
        clearTimeout(st.timer);
        var body = new URLSearchParams();
        body.set('_csrf', csrf);
        body.set('kind', st.kind);
        body.set('base', st.base);
        body.set('text', st.ta.value);
        var blob = new Blob([body.toString()], { type: 'application/x-www-form-urlencoded' });
        var sent = navigator.sendBeacon && navigator.sendBeacon(url, blob);
        if (!sent) {
          fetch(url, { method: 'POST', keepalive: true, headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRF-Token': csrf }, body: body.toString() });
        }
        setBase(st, st.ta.value);
      });
    }
    window.addEventListener('pagehide', flushAll);
    document.addEventListener('visibilitychange', function () {
      if (document.visibilityState === 'hidden') flushAll();
    });

    function poll() {
      fetch(url + '?since=' + encodeURIComponent(gen), { headers: { Accept: 'application/json' }, cache: 'no-store' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (res) {
          if (!res || !res.changed) return;
          gen = String(res.gen);
          Object.keys(fields).forEach(function (kind) {
            var st = fields[kind], text = res.fields[kind];
            if (typeof text !== 'string') return;
            // Only a field the user is not in the middle of changing takes the new text.
            if (!st.pending && st.ta.value === st.base && text !== st.ta.value) {
              apply(st.ta, text);
              setBase(st, text);
            }
          });
        })
        .catch(function () {})
        .then(function () { setTimeout(poll, 1000); });
    }
    setTimeout(poll, 1000);
  }

  // ---------------------------------------------------------------- print
  var hint = document.querySelector('.app-print-hint');
  if (hint && window.print) {
    var b = document.createElement('button');
    b.type = 'button';
    b.className = 'nhsuk-button nhsuk-button--secondary app-print-button';
    b.textContent = 'Print this copy';
    b.addEventListener('click', function () { window.print(); });
    hint.parentNode.insertBefore(b, hint);
  }
})();
