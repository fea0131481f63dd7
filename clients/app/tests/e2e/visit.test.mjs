// The home visit, end to end, in a real headless Chromium against real processes: a borough
// server and two practitioners' apps (two devices). Run with `clients/app/tests/run-e2e.sh`.
//
// Robin opens a case, adds the network, records a meeting with notes, proposes a decision and
// records everyone's position; Kim, on another device, sees Robin's typing arrive live. Then the
// server goes away: Robin keeps writing offline (the badge says the changes are only on this
// device), both change the same detail, the server comes back, Kim sees Robin's offline words and
// a conflict to resolve. axe-core checks every page; screenshots go to tests/screenshots/.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BoroughServer, DeviceApp, launchChromium, openApp, axeCheck, screenshot, waitFor, cleanWork,
  appRequest, clickAndLoad,
} from './harness.mjs';

const server = new BoroughServer();
const robin = new DeviceApp('robin');
const kim = new DeviceApp('kim');
let browser;
const violations = [];
const tabs = [];

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await robin.stop();
  await kim.stop();
  await server.stop();
  if (!process.env.KEEP_E2E_WORK) cleanWork();
});

async function check(page, name) {
  violations.push(...(await axeCheck(page, name)));
  await screenshot(page, name);
}

async function badge(page) {
  return page.evaluate(() => ({
    link: document.querySelector('#sync-link')?.textContent.trim(),
    saved: document.querySelector('#sync-saved')?.textContent.trim(),
  }));
}

async function waitForBadge(page, what, pred, timeout = 90000) {
  return waitFor(`${what} (badge)`, async () => pred(await badge(page)), { timeout, interval: 1000 });
}

/** The meeting's texts as the app holds them (what is saved, not what a textarea shows). */
async function savedText(tab, app, meetingUrl) {
  const cookie = (await tab.context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
  const res = await appRequest(app, `${meetingUrl}/text`, { headers: { cookie } });
  return res.json().fields;
}

async function enrol(page, app, code, device) {
  await page.waitForURL(/\/enrol$/);
  await page.fill('#server', server.addr());
  await page.fill('#code', code);
  await page.fill('#device', device);
  await page.getByRole('button', { name: 'Enrol this device' }).click();
  await page.waitForURL(`${app.base}/`);
  await page.getByRole('heading', { name: 'Your caseload' }).waitFor();
}

test('a home visit on two devices, online and offline', { timeout: 25 * 60 * 1000 }, async (t) => {
  let A, B, caseId, meetingUrl, decisionUrl, robinId;

  await t.test('a borough server and two enrolled apps start', async () => {
    await server.start();
    await server.admin('team', 'add', 'North');
    robinId = await server.admin('practitioner', 'add', 'Robin Lee', '--team', 'North');
    await server.admin('practitioner', 'add', 'Kim Ode', '--team', 'North');
    await server.admin('practitioner', 'add', 'Ines Peer', '--team', 'North', '--role', 'peer_support');
    const robinCode = (await server.admin('enrol', 'Robin Lee')).split('\n').pop().trim();
    const kimCode = (await server.admin('enrol', 'Kim Ode')).split('\n').pop().trim();
    // The browser first: each app's launch link works only for a minute after it starts.
    browser = await launchChromium();
    await robin.start();
    await kim.start();
    A = await openApp(browser, robin);
    B = await openApp(browser, kim);
    tabs.push(A, B);
    await check(A.page, '01-enrol');
    await enrol(A.page, robin, robinCode, "Robin's laptop");
    await enrol(B.page, kim, kimCode, "Kim's laptop");
    await waitForBadge(A.page, 'Robin connected', (b) => b.link === 'Connected');
    await waitForBadge(B.page, 'Kim connected', (b) => b.link === 'Connected');
  });

  await t.test('requests without the launch secret or the CSRF token are refused', async () => {
    const anonymous = await appRequest(robin, '/');
    assert.equal(anonymous.status, 403);
    const cookies = await A.context.cookies();
    const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
    assert.ok(cookie.includes('polyphony_session='));
    const forged = await appRequest(robin, '/cases', {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=Forged+Case',
    });
    assert.equal(forged.status, 403);
    const session = cookies.find((c) => c.name === 'polyphony_session');
    assert.ok(session.httpOnly, 'the session cookie is HttpOnly');
    assert.equal(session.sameSite, 'Strict');
  });

  await t.test('Robin opens a case and adds the network', async () => {
    const p = A.page;
    await check(p, '02-caseload-empty');
    await p.getByRole('button', { name: 'Open a new case' }).click();
    await p.getByRole('button', { name: 'Open case' }).click();
    await p.locator('.nhsuk-error-summary').waitFor();
    await check(p, '03-new-case-error-summary');
    await p.fill('#name', 'Alex Smith');
    await p.fill('#nhs_number', '999 100 0003');
    await p.getByRole('button', { name: 'Open case' }).click();
    await p.waitForURL(/\/case\/[0-9a-f-]{36}$/);
    caseId = p.url().split('/case/')[1];
    const members = [
      ['Sam Smith', 'my sister', 'family'],
      ['Chris Obi', 'my best friend', 'friend'],
      ['Dr Jo Patel', 'my GP', 'professional'],
    ];
    for (const [name, rel, role] of members) {
      await p.goto(`${robin.base}/case/${caseId}/members/new`);
      if (name === 'Sam Smith') await check(p, '04-add-member');
      await p.fill('#member-name', name);
      await p.fill('#relationship', rel);
      await p.check(`input[name=role][value=${role}]`);
      await p.getByRole('button', { name: 'Add to the network' }).click();
      await p.waitForURL(/#network$/);
    }
    await clickAndLoad(p, p.getByRole('button', { name: 'Add me to the care team' }));
    await p.getByText('You were added to the care team').waitFor();
  });

  await t.test('a member can be added with the keyboard alone', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}`);
    // The first Tab reaches the skip link, which takes focus to the main content.
    await p.keyboard.press('Tab');
    assert.equal(await p.evaluate(() => document.activeElement.textContent.trim()), 'Skip to main content');
    await p.goto(`${robin.base}/case/${caseId}/members/new`);
    await p.locator('#member-name').focus();
    await p.keyboard.type('Pat Green');
    await p.keyboard.press('Tab');
    await p.keyboard.type('neighbour who checks on me');
    await p.keyboard.press('Tab'); // into the role radios (Family is checked)
    await p.keyboard.press('ArrowDown'); // Friend
    await p.keyboard.press('ArrowDown'); // Professional
    await p.keyboard.press('ArrowDown'); // Peer
    await p.keyboard.press('ArrowDown'); // Someone else
    assert.equal(await p.evaluate(() => document.activeElement.value), 'other');
    // The design system draws a radio's focus ring on its label's ::before.
    const focusRing = await p.evaluate(() => {
      const label = document.querySelector(`label[for="${document.activeElement.id}"]`);
      return getComputedStyle(label, '::before').boxShadow;
    });
    assert.notEqual(focusRing, 'none', 'a focused control shows it');
    await p.locator('#email').focus();
    await p.keyboard.press('Enter');
    await p.waitForURL(/#network$/);
    assert.match(await p.locator('#network-list').textContent(), /Pat Green/);
  });

  await t.test('Robin records a meeting with notes and reflections', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}/meetings/new`);
    await p.getByLabel('Sam Smith (my sister)').check();
    await p.getByLabel('Chris Obi (my best friend)').check();
    await check(p, '05-new-meeting');
    await p.getByRole('button', { name: 'Start the meeting record' }).click();
    await p.waitForURL(/\/meeting\/[0-9a-f-]{36}$/);
    meetingUrl = p.url().replace(robin.base, '');
    await p.fill('#notes', 'Alex said the nights are the hardest. Sam has been staying over.');
    await p.getByText('Saved on this device').waitFor();
    await p.fill('#reflections', 'Robin wondered aloud whether the nights feel lonelier since the move.');
    await waitFor('reflections saved', async () => (await savedText(A, robin, meetingUrl)).reflections.includes('lonelier'));
    await p.fill('#agreed', 'Meet again on Friday at home.');
    await p.getByRole('button', { name: 'Save what was agreed' }).click();
    await waitFor('agreed saved', async () => (await savedText(A, robin, meetingUrl)).agreed.includes('Friday'));
    // Typing and leaving at once: the words still reach the record (sent as the page goes).
    await p.locator('#notes').focus();
    await p.keyboard.press('End');
    await p.keyboard.type(' Alex smiled.');
    await p.goto(`${robin.base}/case/${caseId}`);
    await waitFor('words typed just before leaving saved', async () => (await savedText(A, robin, meetingUrl)).notes.endsWith('Alex smiled.'));
    await p.goto(`${robin.base}${meetingUrl}`);
    assert.match(await p.inputValue('#notes'), /nights are the hardest/);
    await check(p, '06-meeting');
    // The size of a tablet on a home visit.
    await p.setViewportSize({ width: 768, height: 1024 });
    await screenshot(p, '06b-meeting-tablet');
    await p.setViewportSize({ width: 1200, height: 900 });
  });

  await t.test("Kim sees Robin's typing arrive, and Robin sees Kim's", async () => {
    const q = B.page;
    await waitFor('the case to reach Kim', async () => {
      await q.goto(`${kim.base}/`);
      return (await q.locator('#caseload').count()) > 0 && (await q.getByText('Alex Smith').count()) > 0;
    }, { timeout: 90000, interval: 2000 });
    await q.goto(`${kim.base}${meetingUrl}`);
    assert.match(await q.inputValue('#notes'), /nights are the hardest/);
    const p = A.page;
    await p.locator('#notes').focus();
    await p.keyboard.press('End');
    await p.locator('#notes').pressSequentially(' Chris will call on Wednesday.', { delay: 20 });
    await waitFor("Robin's words on Kim's screen", async () => (await q.inputValue('#notes')).includes('Chris will call on Wednesday.'), { timeout: 60000 });
    await q.locator('#reflections').focus();
    await q.keyboard.press('End');
    await q.locator('#reflections').pressSequentially(' Kim noticed how Sam looked at Alex when the move came up.', { delay: 20 });
    await waitFor("Kim's words on Robin's screen", async () => (await p.inputValue('#reflections')).includes('how Sam looked at Alex'), { timeout: 60000 });
    assert.match(await p.inputValue('#reflections'), /lonelier since the move/);
    await screenshot(q, '07-live-typing-second-device');
  });

  await t.test('Robin proposes a decision and records each position', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}/decisions/new`);
    await check(p, '08-new-decision');
    await p.fill('#decision-text', 'Try a week without the night-time medication');
    await p.selectOption('#proposed_by', 'person');
    await p.getByRole('button', { name: 'Propose decision' }).click();
    await p.waitForURL(/\/decision\/[0-9a-f-]{36}$/);
    decisionUrl = p.url().replace(robin.base, '');
    const positions = [
      ['Alex (the person)', 'agree', 'I want to wake up without feeling foggy'],
      ['Sam Smith (my sister)', 'disagree', "I'm worried about the nights when I'm not there"],
      ['Chris Obi (my best friend)', 'unsure', 'I want to hear more first'],
    ];
    for (const [who, stance, words] of positions) {
      const label = who === 'Alex (the person)' ? 'Alex Smith (the person)' : who;
      await p.selectOption('#who', { label });
      await p.check(`input[name=stance][value=${stance}]`);
      await p.fill('#words', words);
      await clickAndLoad(p, p.getByRole('button', { name: 'Record position' }));
      await p.getByText('Position recorded').waitFor();
    }
    await p.check('input[name=status][value=agreed]');
    await p.fill('#status-note', 'Sam will stay over on Monday and Tuesday');
    await clickAndLoad(p, p.getByRole('button', { name: 'Save status' }));
    await p.getByText('Status saved').waitFor();
    await p.fill('#action-text', 'Ask the GP about a lower dose as a fallback');
    await p.selectOption('#owner', { label: 'Robin Lee (practitioner)' });
    await clickAndLoad(p, p.getByRole('button', { name: 'Add action' }));
    await p.getByText('Action added').waitFor();
    const table = await p.locator('#positions-table').textContent();
    assert.match(table, /worried about the nights/);
    assert.match(table, /Disagrees/);
    await check(p, '09-decision');
  });

  // What the list holds, how it sorts and what "Mine only" keeps are asserted in tests/http.rs;
  // here a real browser follows the caseload's link, the sort links and the GET form keep their
  // choices, and axe checks both views.
  await t.test('an overdue action shows on the morning list, whose sort links and Mine filter keep their choices', async () => {
    const p = A.page;
    await p.goto(`${robin.base}${decisionUrl}`);
    await p.fill('#action-text', 'Send Alex the crisis line numbers');
    await p.selectOption('#owner', { label: 'Robin Lee (practitioner)' });
    await p.fill('#due-day', '1');
    await p.fill('#due-month', '1');
    await p.fill('#due-year', '2020');
    await clickAndLoad(p, p.getByRole('button', { name: 'Add action' }));
    await p.getByText('Action added').waitFor();
    await p.goto(`${robin.base}/`);
    await clickAndLoad(p, p.getByRole('link', { name: 'See what needs attention' }));
    await p.getByRole('heading', { name: 'Needs attention' }).waitFor();
    const row = p.locator('#today tr', { hasText: 'Send Alex the crisis line numbers' });
    assert.match(await row.textContent(), /Overdue/);
    assert.match(await row.textContent(), /Due 1 January 2020/);
    await check(p, '09b-needs-attention');
    await clickAndLoad(p, p.getByRole('link', { name: 'kind', exact: true }));
    assert.match(p.url(), /sort=kind/);
    await p.getByLabel('Mine only').check();
    await clickAndLoad(p, p.getByRole('button', { name: 'Show', exact: true }));
    assert.match(p.url(), /mine=1/);
    assert.match(p.url(), /sort=kind/);
    assert.equal(await p.locator('#today tr[data-mine=false]').count(), 0);
    await check(p, '09c-needs-attention-mine');
    await clickAndLoad(p, row.getByRole('link', { name: 'Send Alex the crisis line numbers' }));
    assert.equal(p.url().replace(robin.base, ''), decisionUrl);
  });

  await t.test('the notes are read back and each person answers', async () => {
    const p = A.page;
    await p.goto(`${robin.base}${meetingUrl}/readback`);
    await check(p, '10-readback');
    const sam = p.locator('.app-readback__person', { hasText: 'Sam Smith (my sister)' });
    await sam.getByLabel('Wants to add their own words').check();
    await sam.getByLabel('Their words (if they add any)').fill('Alex slept better on Tuesday.');
    await clickAndLoad(p, sam.getByRole('button', { name: /Save Sam Smith/ }));
    await p.getByText('answer recorded').waitFor();
    const alex = p.locator('.app-readback__person', { hasText: 'Alex Smith' });
    await alex.getByLabel('Confirms the notes').check();
    await clickAndLoad(p, alex.getByRole('button', { name: /Save/ }));
    await p.getByText('Alex Smith’s answer recorded').waitFor();
  });

  await t.test('the ecomap draws the network, and an entry in error stays readable', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}`);
    const svg = p.locator('svg.app-ecomap__svg');
    await svg.waitFor();
    assert.equal(await p.locator('svg.app-ecomap__svg title').textContent(), 'Network of Alex Smith');
    assert.equal(await p.locator('g.app-ecomap__node').count(), 4);
    assert.equal(await p.locator('line.app-ecomap__line--attended').count(), 2, 'Sam and Chris came');
    assert.equal(await p.locator('line.app-ecomap__line--invited').count(), 2, 'the GP and Pat did not');
    await check(p, '11-case-with-ecomap');
    await svg.screenshot({ path: `${(await import('./harness.mjs')).screenshotDir}/12-ecomap.png` });

    await p.goto(`${robin.base}/case/${caseId}`);
    await p.getByRole('link', { name: 'Change Dr Jo Patel' }).click();
    await check(p, '13-member');
    await p.getByRole('link', { name: 'Mark Dr Jo Patel as entered in error' }).click();
    await check(p, '14-entered-in-error');
    await p.check('input[name=kind][value=mistake]');
    await p.fill('#reason', 'Added to the wrong case');
    await clickAndLoad(p, p.getByRole('button', { name: 'Mark as entered in error' }));
    await p.getByText('Marked as entered in error').waitFor();
    const row = p.locator('#network-list tr.app-in-error');
    assert.match(await row.textContent(), /Dr Jo Patel/);
    assert.match(await row.textContent(), /Added to the wrong case/);
    assert.equal(await row.locator('s').first().textContent(), 'Dr Jo Patel');
    assert.equal(await p.locator('g.app-ecomap__node').count(), 3);
  });

  await t.test('the network copy is for a member whose consent is given, plain and printable', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}/network-copy`);
    assert.equal(await p.getByRole('link', { name: 'Make the copy for Sam Smith' }).count(), 0);
    await check(p, '15-network-copy-choose');
    // Consent is recorded on the member's page; then the copy can be made for Sam.
    await p.goto(`${robin.base}/case/${caseId}`);
    await p.getByRole('link', { name: 'Change Sam Smith' }).click();
    await p.getByRole('button', { name: 'Record that the person gave consent' }).click();
    await p.getByText('Consent recorded').waitFor();
    await p.goto(`${robin.base}/case/${caseId}/network-copy`);
    await p.getByRole('link', { name: 'Make the copy for Sam Smith' }).click();
    const text = await p.locator('main').textContent();
    assert.match(text, /made for Sam Smith \(my sister\)/);
    assert.match(text, /What we have written with Alex/);
    assert.match(text, /Sam Smith \(my sister\) does not agree/);
    assert.match(text, /Alex slept better on Tuesday/);
    await check(p, '15-network-copy');
    await p.emulateMedia({ media: 'print' });
    await screenshot(p, '16-network-copy-print');
    await p.emulateMedia({ media: 'screen' });
  });

  await t.test('offline, Robin keeps writing; the badge says where the work is', async () => {
    await server.stop();
    await waitForBadge(A.page, 'Robin offline', (b) => b.link === 'Offline');
    await waitForBadge(B.page, 'Kim offline', (b) => b.link === 'Offline');
    const p = A.page;
    await p.goto(`${robin.base}${meetingUrl}`);
    await p.locator('#notes').focus();
    await p.keyboard.press('End');
    await p.locator('#notes').pressSequentially(' Written offline at the kitchen table.', { delay: 10 });
    await p.getByText('Saved on this device').waitFor();
    await waitForBadge(p, 'unsynced changes shown', (b) => /^\d+ changes? only on this device$/.test(b.saved) && b.link === 'Offline', 30000);
    // Both practitioners change the same detail while apart: a conflict to resolve later.
    await p.goto(`${robin.base}/case/${caseId}/person`);
    await check(p, '17-person-details');
    await p.fill('#phone', '07700 900111');
    await clickAndLoad(p, p.getByRole('button', { name: 'Save details' }));
    await p.getByText('Details saved').waitFor();
    const q = B.page;
    await q.goto(`${kim.base}/case/${caseId}/person`);
    await q.fill('#phone', '07700 900222');
    await clickAndLoad(q, q.getByRole('button', { name: 'Save details' }));
    await q.getByText('Details saved').waitFor();
    await p.goto(`${robin.base}/`);
    const b = await badge(p);
    assert.equal(b.link, 'Offline');
    assert.match(b.saved, /only on this device/);
    assert.equal(await p.getByText('All saved on the borough server').count(), 0);
    await check(p, '18-caseload-offline');
  });

  await t.test('back online, Kim sees the offline words and a conflict to resolve', async () => {
    await server.start();
    await waitForBadge(A.page, 'Robin all saved', (b) => b.link === 'Connected' && b.saved === 'All saved on the borough server', 120000);
    await waitForBadge(B.page, 'Kim all saved', (b) => b.link === 'Connected' && b.saved === 'All saved on the borough server', 120000);
    const q = B.page;
    await waitFor("Robin's offline words on Kim's device", async () => {
      await q.goto(`${kim.base}${meetingUrl}`);
      return (await q.inputValue('#notes')).includes('Written offline at the kitchen table.');
    }, { timeout: 60000, interval: 2000 });
    await waitFor('the conflict banner', async () => {
      await q.goto(`${kim.base}/case/${caseId}`);
      return (await q.locator('#conflicts-banner').count()) > 0;
    }, { timeout: 60000, interval: 2000 });
    await screenshot(q, '19-case-conflict-banner');
    await q.getByRole('link', { name: 'Choose which to keep' }).click();
    const body = await q.locator('main').textContent();
    assert.match(body, /07700 900111/);
    assert.match(body, /07700 900222/);
    assert.match(body, /Robin Lee/);
    assert.match(body, /Kim Ode/);
    await check(q, '20-conflicts');
    await q.getByLabel(/07700 900111/).check();
    await clickAndLoad(q, q.getByRole('button', { name: 'Keep this value' }));
    await q.getByText('Your choice was recorded').waitFor();
    await q.goto(`${kim.base}/case/${caseId}`);
    assert.equal(await q.locator('#conflicts-banner').count(), 0);
    assert.match(await q.locator('main').textContent(), /07700 900111/);
    await q.goto(`${kim.base}${decisionUrl}`);
    assert.match(await q.locator('#positions-table').textContent(), /worried about the nights/);
    await q.goto(`${kim.base}/`);
    await check(q, '21-caseload-second-device');
  });

  await t.test("a meeting on the wrong person's record moves to the right case and leaves no trace of its words", async () => {
    const p = A.page;
    await p.goto(`${robin.base}/cases/new`);
    await p.fill('#name', 'Jordan Lee');
    await p.getByRole('button', { name: 'Open case' }).click();
    await p.waitForURL(/\/case\/[0-9a-f-]{36}$/);
    const jordan = p.url().split('/case/')[1];
    await p.goto(`${robin.base}/case/${caseId}/meetings/new`);
    await p.getByRole('button', { name: 'Start the meeting record' }).click();
    await p.waitForURL(/\/meeting\/[0-9a-f-]{36}$/);
    const wrongUrl = p.url().replace(robin.base, '');
    await p.fill('#notes', 'Jordan talked about the flat on Kestrel Road.');
    await p.getByRole('button', { name: 'Save notes' }).click();
    await waitFor('notes saved', async () => (await savedText(A, robin, wrongUrl)).notes.includes('Kestrel Road'));
    assert.match(await p.locator('main').textContent(), /Where this meeting stands/);
    await p.getByRole('link', { name: 'Mark this meeting as entered in error' }).click();
    await p.check('input[name=kind][value=wrong_person]');
    await p.fill('#reason', 'Recorded on the wrong case');
    await p.getByRole('button', { name: 'Mark as entered in error' }).click();
    await p.getByRole('heading', { name: 'Recorded on the wrong person’s record' }).waitFor();
    await check(p, '22-wrong-person-move');
    await p.getByLabel('Write it on Jordan Lee’s record').check();
    await p.getByRole('button', { name: 'Remove it from this record' }).click();
    await p.waitForURL(`${robin.base}/case/${jordan}`);
    await p.locator('h2#meetings + ul a').first().click();
    assert.match(await p.inputValue('#notes'), /Kestrel Road/);
    assert.match(await p.inputValue('#notes'), /Moved here by Robin Lee/);
    await p.goto(`${robin.base}/case/${caseId}`);
    const alexCase = await p.locator('main').textContent();
    assert.doesNotMatch(alexCase, /Kestrel Road/);
    assert.match(alexCase, /A meeting was removed from this record because it was recorded on the wrong person’s record/);
    await check(p, '23-case-with-tombstone');
    await p.goto(`${robin.base}${wrongUrl}`);
    assert.doesNotMatch(await p.locator('main').textContent(), /Kestrel Road/);
    // Kim's device receives the mark and withholds the words too.
    const q = B.page;
    await waitFor("the tombstone on Kim's device", async () => {
      await q.goto(`${kim.base}/case/${caseId}`);
      return /A meeting was removed from this record/.test(await q.locator('main').textContent());
    }, { timeout: 90000, interval: 2000 });
    assert.doesNotMatch(await q.locator('main').textContent(), /Kestrel Road/);
  });

  // The team list comes from the server: a peer support worker is ticked as present and noted in
  // that role, a colleague joins the care team from the list, and a role the administrator
  // changes reaches the connected app by itself (the live session's new list).
  await t.test('colleagues from the team list, in their roles, and a role changed while connected', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}/meetings/new`);
    await p.getByLabel('Ines Peer (peer support worker)').check();
    await p.getByRole('button', { name: 'Start the meeting record' }).click();
    await p.waitForURL(/\/meeting\/[0-9a-f-]{36}$/);
    assert.match(await p.locator('.nhsuk-summary-list').textContent(), /Ines Peer \(peer support worker\)/);
    await check(p, '24-meeting-staff');
    await p.goto(`${robin.base}/case/${caseId}`);
    await p.selectOption('#colleague', { label: 'Kim Ode (practitioner)' });
    await clickAndLoad(p, p.getByRole('button', { name: 'Add to the care team' }));
    await p.getByText('Kim Ode was added to the care team').waitFor();
    assert.match(await p.locator('main').textContent(), /Kim Ode, one of the pair/);
    await check(p, '25-care-team-colleague');
    await server.admin('practitioner', 'role', 'Ines Peer', 'practitioner');
    await waitFor('the new role to reach the connected app', async () => {
      await p.goto(`${robin.base}/case/${caseId}/meetings/new`);
      return (await p.getByLabel('Ines Peer (practitioner)').count()) > 0;
    }, { timeout: 60000, interval: 1000 });
  });

  // The safety and crisis plan, written in the person's words at the meeting, changed with what
  // it said before kept, and due for review on the morning list once its date has come.
  await t.test('the crisis plan is written in the person\'s words, changed, and comes due for review', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}/plan/new`);
    await p.selectOption('#plan-section', 'preferences');
    await p.fill('#plan-text', 'Sam looks after the cat');
    await p.selectOption('#words_of', { label: 'Alex Smith (the person)' });
    await check(p, '26-plan-new');
    await clickAndLoad(p, p.getByRole('button', { name: 'Add to the plan' }));
    await p.getByText('Added to the crisis plan').waitFor();
    await clickAndLoad(p, p.locator('#crisis-plan ~ ul a', { hasText: 'Change' }).first());
    await p.fill('#plan-text', 'Sam, or the neighbour at no. 4, looks after the cat');
    await check(p, '27-plan-item');
    await clickAndLoad(p, p.getByRole('button', { name: 'Save the new words' }));
    await p.getByText('what it said before is kept').waitFor();
    const plan = await p.locator('main').textContent();
    assert.match(plan, /Sam, or the neighbour at no\. 4, looks after the cat/);
    assert.match(plan, /What it said before/);
    await p.fill('#review_on-day', '2');
    await p.fill('#review_on-month', '1');
    await p.fill('#review_on-year', '2026');
    await clickAndLoad(p, p.getByRole('button', { name: 'Save review date' }));
    await p.getByText('To be reviewed by 2 January 2026.').waitFor();
    await check(p, '28-case-with-plan');
    await p.goto(`${robin.base}/today`);
    const row = p.locator('#today tr[data-kind=review_due]');
    assert.match(await row.textContent(), /Review due/);
    await check(p, '29-needs-attention-review');
  });

  // A safeguarding concern is in the person's copy unless two practitioners agree: Robin asks,
  // Robin's own page offers no confirmation, Kim confirms on her device, and Robin's page then
  // says it is withheld.
  await t.test('a safety note is withheld only when a second practitioner confirms', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}`);
    await p.check('input[name=kind][value=safeguarding]');
    await p.fill('#note-text', 'Concern raised by the school nurse');
    await clickAndLoad(p, p.getByRole('button', { name: 'Save the note' }));
    await p.getByText('Safeguarding concern saved').waitFor();
    await p.locator('#safety-notes ~ ul input[name=reason]').first().fill('Strategy meeting first');
    await clickAndLoad(p, p.getByRole('button', { name: 'Ask to withhold it' }).first());
    await p.getByText('Asked: a second practitioner confirms').waitFor();
    assert.equal(await p.getByRole('button', { name: 'Confirm: withhold it' }).count(), 0);
    await check(p, '30-safety-note-asked');
    const q = B.page;
    await waitFor("the request on Kim's device", async () => {
      await q.goto(`${kim.base}/case/${caseId}`);
      return (await q.getByRole('button', { name: 'Confirm: withhold it' }).count()) > 0;
    }, { timeout: 90000, interval: 2000 });
    await clickAndLoad(q, q.getByRole('button', { name: 'Confirm: withhold it' }));
    await q.getByText('Confirmed: the note is withheld').waitFor();
    await check(q, '31-safety-note-withheld');
    await waitFor("the confirmation on Robin's device", async () => {
      await p.goto(`${robin.base}/case/${caseId}`);
      return /Withheld from Alex Smith/.test(await p.locator('main').textContent());
    }, { timeout: 90000, interval: 2000 });
  });

  // A GP letter attached from the case page (the form carries the file): listed with where it
  // is, on Kim's device once it has synced, and opened there as it was attached.
  await t.test('a letter attached from the case page reaches the other device', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/case/${caseId}`);
    await p.check('input[name=kind][value=gp_letter]');
    await p.fill('#attachment-title', 'Letter from Dr Shah');
    const letter = Buffer.from('%PDF-1.4 a letter from the GP (test bytes)');
    await p.setInputFiles('#attachment-file', { name: 'gp-letter.pdf', mimeType: 'application/pdf', buffer: letter });
    await clickAndLoad(p, p.getByRole('button', { name: 'Attach the file' }));
    await p.getByText('GP letter attached').waitFor();
    const item = p.locator('#attachments ~ ul li').filter({ hasText: 'Letter from Dr Shah' });
    assert.match(await item.textContent(), /gp-letter\.pdf/);
    await check(p, '32-case-with-attachment');
    const q = B.page;
    await waitFor("the letter on Kim's device", async () => {
      await q.goto(`${kim.base}/case/${caseId}`);
      const text = await q.locator('main').textContent();
      return /Letter from Dr Shah/.test(text) && /Saved on the server/.test(text);
    }, { timeout: 90000, interval: 2000 });
    await check(q, '33-attachment-on-the-other-device');
    const href = await q.locator('#attachments ~ ul a', { hasText: 'Open gp-letter.pdf' }).getAttribute('href');
    const body = await q.evaluate(async (u) => {
      const r = await fetch(u);
      return { type: r.headers.get('content-type'), text: await r.text() };
    }, href);
    assert.equal(body.type, 'application/pdf');
    assert.equal(body.text, letter.toString());
  });

  // Issue 17, part 2: a new case opened with its referral and letter from the new-case form; the
  // case page and the caseload show the time left to the first meeting; the page to record a
  // re-referral is checked too.
  await t.test('a case opened with its referral and letter shows the time left to the first meeting', async () => {
    const p = A.page;
    await p.goto(`${robin.base}/cases/new`);
    await p.fill('#name', 'Sam Taylor');
    // An hour ago, on the UK clock.
    const uk = Object.fromEntries(new Intl.DateTimeFormat('en-GB', {
      timeZone: 'Europe/London', year: 'numeric', month: 'numeric', day: 'numeric',
      hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
    }).formatToParts(new Date(Date.now() - 60 * 60 * 1000)).map((x) => [x.type, x.value]));
    await p.fill('#received_at-day', uk.day);
    await p.fill('#received_at-month', uk.month);
    await p.fill('#received_at-year', uk.year);
    await p.fill('#received_at-time', `${uk.hour}:${uk.minute}`);
    await p.check('input[name=source][value=gp]');
    await p.fill('#referrer', 'Dr Shah, Elm Street Surgery');
    await p.fill('#reason', 'Sam has stopped sleeping and is frightened to be at home');
    await p.check('input[name=urgency][value=urgent]');
    await p.setInputFiles('#letter', { name: 'referral.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4 a referral (test bytes)') });
    await check(p, '34-new-case-with-referral');
    await p.getByRole('button', { name: 'Open case' }).click();
    await p.waitForURL(/\/case\/[0-9a-f-]{36}$/);
    const sam = p.url().split('/case/')[1];
    const text = await p.locator('main').textContent();
    assert.match(text, /frightened to be at home/);
    assert.match(text, /GP: Dr Shah, Elm Street Surgery/);
    assert.match(text, /First network meeting due by .*: \d+ hours? (\d+ minutes? )?left/);
    assert.match(text, /Letter: referral\.pdf/);
    await check(p, '35-case-with-a-referral');
    await clickAndLoad(p, p.getByRole('button', { name: 'Record a referral' }));
    await check(p, '36-record-a-referral');
    await p.goto(`${robin.base}/`);
    const cell = await p.locator(`tr[data-case="${sam}"] td[data-first-meeting]`).textContent();
    assert.match(cell, /left, urgent \(24 hours\)/);
    await check(p, '37-caseload-first-meeting-due');
  });

  await t.test('no page has a serious or critical accessibility violation', () => {
    assert.deepEqual(violations, []);
  });

  await t.test('no page asked anything of another host', () => {
    for (const tab of tabs) assert.deepEqual(tab.foreign, []);
    for (const tab of tabs) {
      const csp = tab.consoleErrors.filter((e) => /Content Security Policy/i.test(e));
      assert.deepEqual(csp, [], 'no CSP violations');
    }
  });
});
