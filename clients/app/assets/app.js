// Progressive enhancement only: every screen works without this file.
// - Keeps the sync badge current (polls /status.json), and says at once when the app itself stops
//   answering: the badge turns to a warning, and back when the app answers.
// - Keeps what was typed and not yet saved while the app is stopped, in this page's memory only
//   (never localStorage, sessionStorage or IndexedDB: that would be record text on the device
//   outside the encrypted store), and sends it when the app is back. The app comes back at the
//   same address (src/address.rs); after a restart it no longer knows this tab, so the tab waits
//   until the new launch link has let the browser in (in another tab), then sends. Forms carry a
//   one-time token, so a form sent again is applied once (src/once.rs).
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

  // ---------------------------------------------------------------- is the app there?
  // 'ok': it answers. 'stopped': it did not answer at all. 'locked': it answers, but refuses this
  // tab (a restarted app: the session lived in the old process).
  var appState = 'ok';
  var onBack = [];      // what to send again when the app is back and knows this tab
  var leaving = false;  // this page is going on purpose: do not hold it back
  var badge = document.getElementById('sync-status');
  var ANSWER_WITHIN = 8000;

  /** fetch, failing when no answer comes within ANSWER_WITHIN (a hung app is a stopped one). */
  function ask(url, options) {
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = ctl && setTimeout(function () { ctl.abort(); }, ANSWER_WITHIN);
    var o = options || {};
    if (ctl) o.signal = ctl.signal;
    o.cache = 'no-store';
    o.credentials = 'same-origin';
    return fetch(url, o).then(function (r) { clearTimeout(timer); return r; },
      function (e) { clearTimeout(timer); throw e; });
  }

  function showTemplate(id, state) {
    var t = document.getElementById(id);
    if (!badge || !t) return;
    badge.innerHTML = t.innerHTML;
    badge.setAttribute('data-state', state);
    // A case's own sync line is not known while the app is away either.
    Array.prototype.forEach.call(document.querySelectorAll('[data-case] [data-sync], #case-sync[data-case]'), function (cell) {
      cell.innerHTML = '<strong class="nhsuk-tag nhsuk-tag--grey">Not known while the app is away</strong>';
    });
  }

  function appStopped() {
    if (appState === 'stopped') return;
    appState = 'stopped';
    showTemplate('app-stopped-template', 'app-stopped');
  }

  function appLocked() {
    if (appState === 'locked') return;
    appState = 'locked';
    showTemplate('app-locked-template', 'app-locked');
  }

  function setCsrf(token) {
    if (!token || token === csrf) return;
    csrf = token;
    if (csrfMeta) csrfMeta.setAttribute('content', token);
    Array.prototype.forEach.call(document.querySelectorAll('input[name="_csrf"]'), function (i) { i.value = token; });
  }

  /** The app answered this tab: send what was kept, once. */
  function appAnswered(token) {
    setCsrf(token);
    if (appState === 'ok') return;
    appState = 'ok';
    var again = onBack;
    onBack = [];
    again.forEach(function (f) { f(); });
  }

  function whenBack(f) { if (onBack.indexOf(f) < 0) onBack.push(f); }

  // Leaving while the app is away (a link, a reload, closing the tab) loses what this page kept:
  // the browser asks first.
  window.addEventListener('beforeunload', function (e) {
    if (leaving || (appState === 'ok' && onBack.length === 0)) return;
    e.preventDefault();
    e.returnValue = '';
  });

  // ---------------------------------------------------------------- sync badge
  function refreshStatus() {
    ask('/status.json', { headers: { Accept: 'application/json' } })
      .then(function (r) {
        if (r.status === 403) { appLocked(); return null; }
        return r.ok ? r.json() : null;
      })
      .then(function (s) {
        if (!s) return;
        appAnswered(s.csrf);
        if (!badge) return;
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
      }, function () { appStopped(); });
  }
  if (badge) setInterval(refreshStatus, 2000);

  // ---------------------------------------------------------------- forms
  // A form is sent by the script so that, if the app does not answer, the page stays (with what
  // was typed) instead of turning into the browser's "cannot reach this site" page. Sent again
  // when the app is back; its one-time token makes that safe even if the first sending was saved.
  function keptNote(form, text) {
    var note = form.querySelector('.app-kept');
    if (!note) {
      note = document.createElement('div');
      note.className = 'nhsuk-inset-text app-kept';
      note.setAttribute('role', 'status');
      form.insertBefore(note, form.firstChild);
    }
    note.textContent = text;
  }

  // Load the page a change led to, as the browser does after a form: always afresh (it carries
  // the change and its message), even when only the part after '#' differs from this page's,
  // where location.assign would only scroll.
  function go(to) {
    var u = new URL(to, location.href);
    if (u.pathname + u.search !== location.pathname + location.search) { location.assign(u.href); return; }
    history.replaceState(null, '', u.href);
    location.reload();
  }

  // The form's values when it is sent (what was typed into it while it waited goes too).
  // A form that carries a file goes as multipart/form-data (the browser writes the boundary),
  // with its tokens first, as the app reads them; every other form as urlencoded text.
  function sendForm(kept) {
    var data = new FormData(kept.form, kept.submitter);
    data.set('_csrf', csrf);
    var multipart = (kept.form.getAttribute('enctype') || '').toLowerCase() === 'multipart/form-data';
    var request = multipart
      ? { method: 'POST', headers: { 'X-Polyphony-Form': '1' }, body: data }
      : {
          method: 'POST',
          headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'X-Polyphony-Form': '1' },
          body: new URLSearchParams(data).toString()
        };
    ask(kept.form.action, request).then(function (r) {
      if (r.status === 204) {
        leaving = true;
        go(r.headers.get('X-Polyphony-Location') || '/');
        return;
      }
      if (r.status === 403) {
        appLocked();
        keptNote(kept.form, 'Not sent yet: this form is kept here and is sent as soon as Polyphony lets this tab in again.');
        whenBack(kept.resend);
        return;
      }
      // Anything else (a form with mistakes, an error page) is for the browser to show: it sends
      // the form itself. Nothing was applied, or the one-time token answers as the first time.
      kept.form.setAttribute('data-native', '');
      leaving = true;
      kept.form.requestSubmit(kept.submitter);
    }, function () {
      appStopped();
      keptNote(kept.form, 'Not sent yet: Polyphony has stopped. This form is kept here and is sent as soon as Polyphony is back.');
      whenBack(kept.resend);
    });
  }

  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (e.defaultPrevented || (form.getAttribute('method') || '').toLowerCase() !== 'post') return;
    if (form.hasAttribute('data-native')) { form.removeAttribute('data-native'); return; }
    if (!window.fetch || !window.URLSearchParams) return;
    e.preventDefault();
    if (form.appKept) return; // pressed again: it is being sent, or kept to send when back
    var kept = { form: form, submitter: e.submitter && e.submitter.form === form ? e.submitter : null };
    kept.resend = function () { sendForm(kept); };
    form.appKept = kept;
    sendForm(kept);
  });

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
      ask(url, {
        method: 'POST',
        headers: { Accept: 'application/json', 'X-CSRF-Token': csrf, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: body.toString()
      })
        .then(function (r) {
          if (r.status === 403) {
            // A restarted app that does not know this tab yet: keep the words for when it does.
            st.pending = false;
            appLocked();
            say('Not saved yet: your words are kept in this page and are saved as soon as Polyphony lets this tab in again.');
            whenBack(saveAll);
            return null;
          }
          return r.json();
        })
        .then(function (res) {
          if (!res) return;
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
        }, function () {
          // No answer: the words stay in the field (and its base stays what the app last had),
          // so sending them again when the app is back merges them in once.
          st.pending = false;
          appStopped();
          say('Not saved yet: Polyphony has stopped. Your words are kept in this page and are saved as soon as it is back.');
          whenBack(saveAll);
        });
    }

    function saveAll() {
      Object.keys(fields).forEach(function (kind) { save(fields[kind]); });
    }

    // Leaving the page (a link, closing the lid) must not lose the last words typed before the
    // pause that would have saved them: send them with a beacon, which outlives the page.
    function flushAll() {
      // With the app away a beacon reaches nobody: the words stay here, to be sent when it is back.
      if (appState !== 'ok') return;
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
      if (appState !== 'ok') { setTimeout(poll, 2000); return; }
      ask(url + '?since=' + encodeURIComponent(gen), { headers: { Accept: 'application/json' } })
        .then(function (r) { return r.ok ? r.json() : null; }, function () { appStopped(); return null; })
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
        .then(function () { setTimeout(poll, appState === 'ok' ? 1000 : 2000); });
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
