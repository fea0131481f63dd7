// The app is killed while a practitioner is typing, and started again: the page says so at once,
// keeps what was typed (in its memory only), and sends it when the app is back, once. Run with
// `clients/app/tests/run-e2e.sh`.
//
// Robin types meeting notes in one tab and a new network member in another; the app process is
// killed (SIGKILL: no chance to tidy up). Both tabs must turn the badge to a clear warning, keep
// the words, and hold on. The app is started again on the same profile: it must come back at the
// same address, and once its new launch link has let the browser in (in a new tab, as the app
// opens it), both tabs send what they kept: the words reach the record exactly once, and the
// pages say saved. Then nothing typed may be found in the profile directory (outside the
// encrypted store's sealed values) or in the browser's own profile directory.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  BoroughServer, DeviceApp, launchChromiumWithProfile, openAppIn, axeCheck, screenshot, waitFor,
  cleanWork, appRequest, tempDir, filesContaining,
} from './harness.mjs';

const server = new BoroughServer();
const robin = new DeviceApp('robin');
const browserDir = join(tempDir('browser'), 'profile');
let context;

function violationsOf(found) {
  assert.deepEqual(found, [], 'no serious or critical accessibility violation');
}

// Words only this run types, to look for on disk afterwards.
const stamp = randomBytes(4).toString('hex');
const NOTES_BEFORE = `Alex said the nights are the hardest ${stamp}.`;
const NOTES_WHILE_STOPPED = ` Sam will stay on Tuesdays from now on ${stamp}.`;
const MEMBER = `Pat Green${stamp}`;
const RELATIONSHIP = `neighbour who checks on Alex ${stamp}`;

after(async () => {
  if (context) await context.close().catch(() => {});
  await robin.stop();
  await server.stop();
  if (!process.env.KEEP_E2E_WORK) cleanWork();
});

async function badge(page) {
  return page.evaluate(() => ({
    state: document.querySelector('#sync-status')?.getAttribute('data-state'),
    link: document.querySelector('#sync-link')?.textContent.trim(),
    saved: document.querySelector('#sync-saved')?.textContent.trim(),
    warning: document.querySelector('#app-stopped')?.textContent.replace(/\s+/g, ' ').trim() || '',
  }));
}

async function cookieOf(ctx) {
  return (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
}

test('the app is killed while a note is typed, and comes back', { timeout: 15 * 60 * 1000 }, async (t) => {
  let notesTab, memberTab, caseId, meetingUrl;

  await t.test('an enrolled app, a case and a meeting', async () => {
    await server.start();
    await server.admin('team', 'add', 'North');
    await server.admin('practitioner', 'add', 'Robin Lee', '--team', 'North');
    const code = (await server.admin('enrol', 'Robin Lee')).split('\n').pop().trim();
    context = await launchChromiumWithProfile(browserDir);
    await robin.start();
    const A = await openAppIn(context, robin);
    const p = A.page;
    await p.waitForURL(/\/enrol$/);
    await p.fill('#server', server.addr());
    await p.fill('#code', code);
    await p.fill('#device', "Robin's laptop");
    await p.getByRole('button', { name: 'Enrol this device' }).click();
    await p.getByRole('heading', { name: 'Your caseload' }).waitFor();
    await p.getByRole('button', { name: 'Open a new case' }).click();
    await p.fill('#name', 'Alex Smith');
    await p.getByRole('button', { name: 'Open case' }).click();
    await p.waitForURL(/\/case\/[0-9a-f-]{36}$/);
    caseId = p.url().split('/case/')[1];
    await p.goto(`${robin.base}/case/${caseId}/meetings/new`);
    await p.getByRole('button', { name: 'Start the meeting record' }).click();
    await p.waitForURL(/\/meeting\/[0-9a-f-]{36}$/);
    meetingUrl = p.url().replace(robin.base, '');
    await p.fill('#notes', NOTES_BEFORE);
    await p.getByText('Saved on this device').waitFor();
    notesTab = p;
    memberTab = await context.newPage();
    await memberTab.goto(`${robin.base}/case/${caseId}/members/new`);
    await memberTab.fill('#member-name', MEMBER);
  });

  await t.test('killed, the app is said to have stopped at once, and the typing is kept', async () => {
    await robin.kill();
    // Typing on, not knowing: the save after the pause gets no answer.
    await notesTab.locator('#notes').focus();
    await notesTab.keyboard.press('End');
    await notesTab.locator('#notes').pressSequentially(NOTES_WHILE_STOPPED, { delay: 10 });
    const b = await waitFor('the stopped warning', async () => {
      const now = await badge(notesTab);
      return now.state === 'app-stopped' && now;
    }, { timeout: 10000, interval: 200 });
    assert.equal(b.link, 'The app has stopped');
    assert.match(b.warning, /The Polyphony app has stopped/);
    assert.match(b.warning, /What you type is kept in this page until it is back; do not close this tab/);
    assert.equal(await notesTab.getByText('All saved on the borough server').count(), 0);
    assert.equal(await notesTab.getByText('Connected', { exact: true }).count(), 0);
    await notesTab.getByText(/Not saved yet: Polyphony has stopped/).waitFor();
    violationsOf(await axeCheck(notesTab, 'app stopped'));
    await screenshot(notesTab, 'stops-01-app-stopped');
    // A form sent with the app gone stays on its page, kept, instead of the browser's error page.
    await memberTab.fill('#relationship', RELATIONSHIP);
    await memberTab.getByRole('button', { name: 'Add to the network' }).click();
    await memberTab.getByText(/Not sent yet: Polyphony has stopped/).waitFor();
    assert.match(memberTab.url(), /\/members\/new$/);
    assert.equal(await memberTab.inputValue('#member-name'), MEMBER);
    assert.equal((await badge(memberTab)).state, 'app-stopped');
    await screenshot(memberTab, 'stops-02-form-kept');
  });

  await t.test('started again, the app is at the same address and the tabs send what they kept, once', async () => {
    const oldBase = robin.base;
    await robin.start();
    assert.equal(robin.base, oldBase, 'the restarted app is where the open tabs are');
    // The app answers, but the session was the old process's: the tabs wait to be let in.
    await waitFor('the tab to ask to be let in', async () => (await badge(notesTab)).state === 'app-locked',
      { timeout: 20000, interval: 300 });
    assert.match((await badge(notesTab)).warning, /Let this tab back into Polyphony/);
    await screenshot(notesTab, 'stops-03-let-this-tab-in');
    // The new launch link, in a new tab (the app opens it in the browser when it starts).
    const launched = await context.newPage();
    await launched.goto(robin.url);
    await launched.getByRole('heading', { name: 'Your caseload' }).waitFor();
    // The notes tab saves its words and says so; the badge is the real one again.
    await notesTab.getByText('Saved on this device').waitFor({ timeout: 30000 });
    await waitFor('the real badge back', async () => {
      const b = await badge(notesTab);
      return b.state !== 'app-stopped' && b.state !== 'app-locked' && b.warning === '';
    }, { timeout: 20000, interval: 300 });
    // The member form was sent and its page followed: the message says it was added.
    await memberTab.waitForURL(/\/case\/[0-9a-f-]{36}#network$/, { timeout: 30000 });
    await memberTab.getByText(`${MEMBER} was added to the network`).waitFor();
    await launched.close();
  });

  await t.test('the record has the words exactly once', async () => {
    const cookie = await cookieOf(context);
    const text = (await appRequest(robin, `${meetingUrl}/text`, { headers: { cookie } })).json().fields;
    assert.equal(text.notes, NOTES_BEFORE + NOTES_WHILE_STOPPED);
    const page = (await appRequest(robin, `/case/${caseId}`, { headers: { cookie } })).text;
    const members = page.split(MEMBER).length - 1;
    assert.ok(members >= 1, 'the member is in the record');
    const rows = (await memberTab.locator('#network-list tr', { hasText: MEMBER }).count());
    assert.equal(rows, 1, 'one member, not two');
    // Reloaded from the app: what is on screen is what is in the record.
    await notesTab.reload();
    assert.equal(await notesTab.inputValue('#notes'), NOTES_BEFORE + NOTES_WHILE_STOPPED);
  });

  await t.test('nothing typed was written outside the encrypted store', async () => {
    await context.close();
    context = null;
    await robin.stop();
    const words = [stamp, MEMBER, RELATIONSHIP, NOTES_WHILE_STOPPED.trim()];
    assert.deepEqual(filesContaining(robin.home, words), [], 'the app\'s profile directory');
    assert.deepEqual(filesContaining(browserDir, words), [], 'the browser\'s profile directory');
  });
});
