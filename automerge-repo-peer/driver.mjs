// Drives the automerge-repo sync server (server.mjs, a child process so its memory is its own) with
// the workloads polyphony-load runs against ours, on documents of the same shape and size, and prints
// one JSON line per result (stdout) and a summary (stderr).
//
//   node driver.mjs first-sync --cases 1000 [--batch 100]
//   node driver.mjs reconnect --cases 1000 --edited 100
//   node driver.mjs morning --devices 200 --cases 20 --edited 5
//
// Clients hold their documents in memory (no storage adapter), as polyphony-load's devices do.
// "Stored" means the server's storage adapter finished writing the document (see server.mjs).
import { spawn } from "node:child_process"
import { readFileSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { randomUUID } from "node:crypto"
import { fileURLToPath } from "node:url"
import * as A from "@automerge/automerge"
import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"

const here = path.dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const workload = args[0]
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : dflt
}

// ---------------------------------------------------------------------------- documents

let state = BigInt(opt("seed", 8)) * 0x9e3779b97f4a7c15n | 1n
const mask = (1n << 64n) - 1n
function next() {
  let x = state
  x ^= (x << 13n) & mask
  x ^= x >> 7n
  x ^= (x << 17n) & mask
  state = x
  return x
}
const pick = (items) => items[Number(next() % BigInt(items.length))]

const GIVEN = ["Maria", "Ade", "Siobhan", "Tomasz", "Priya", "Kwame", "Eleanor", "Yusuf", "Grace", "Dylan", "Aisha", "Callum", "Nia", "Oskar", "Ruth", "Imran"]
const FAMILY = ["Lopez", "Okafor", "Byrne", "Nowak", "Shah", "Mensah", "Hughes", "Ali", "Campbell", "Evans", "Rahman", "Fraser", "Jones", "Lind", "Cohen", "Patel"]
const RELATIONSHIPS = [["mother", "family"], ["brother", "family"], ["best friend from school", "friend"], ["GP", "professional"], ["neighbour who checks in", "other"]]
const NOTES = [
  "Maria said the nights have been the hardest part; she wakes around three and the thoughts start again. ",
  "Her mother described feeling shut out since the admission and wants to understand what happened in those weeks. ",
  "Ana said she is worried but did not want to speak over her sister, and asked that we slow down. ",
  "We talked about what a good week would look like, and Maria named walking the dog and seeing her cousin. ",
  "The GP joined by phone for twenty minutes and explained the medication review without pressing for a decision. ",
  "There was a long silence after the question about the future, and we let it stay rather than fill it. ",
  "Tomasz said the shouting at home has stopped since the last meeting, and that he noticed himself listening more. ",
  "The team reflected aloud that several voices in the room want the same thing but fear different things. ",
  "Maria asked that the word crisis not be used in the letter to her employer, and everyone agreed to that. ",
  "We agreed to meet again at home next Thursday, and that anyone can call the team before then if worried. ",
  "Her brother brought up money worries for the first time, and Maria said she had not known how bad it was. ",
  "The neighbour described the evenings she has seen Maria sitting outside and said she would keep knocking. ",
]
const DECISIONS = ["Try a weekly walking group with her cousin", "Reduce the evening dose, reviewed in two weeks with the GP", "Write to the employer together, in Maria's words", "Meet at home rather than at the clinic for the next month", "Ana to be the first person called if things get worse"]
const WORDS = ["I'd like to try it if I can stop when I want", "Too soon for me, but I won't stand in the way", "Yes, as long as we talk again before anything changes", "I'm not sure yet; I want to hear what the doctor thinks"]

function notes(bytes) {
  let s = ""
  while (s.length < bytes) s += pick(NOTES)
  return s.slice(0, bytes)
}

// The same shape as polyphony-load's caseload::care_record: the same keys, values and texts, one
// automerge change per user action (27), each with a commit message naming the author.
function careRecord(author) {
  const by = () => ({ practitioner: author.practitioner, practitioner_name: author.name, device: author.device })
  const msg = (what) => JSON.stringify({ practitioner: author.practitioner, practitioner_name: author.name, device: author.device, what })
  let t = Date.now()
  const ch = (what, f) => {
    doc = A.change(doc, { message: msg(what), time: Math.floor(t++ / 1000) }, f)
  }
  let doc = A.init({ actor: author.actor })
  const caseId = randomUUID()
  ch("open case", (d) => {
    d.schema_version = 1
    d.case_id = caseId
    d.team_id = author.team
    d.created_at = new Date(t)
    d.created_by = by()
    d.actors = {}
    d.person = { name: `${pick(GIVEN)} ${pick(FAMILY)}`, date_of_birth: "1978-04-12" }
    d.network = {}
    d.care_team = {}
    d.meetings = {}
    d.decisions = {}
    d.timeline = { referral: new Date(t) }
  })
  const members = []
  for (const [relationship, role] of RELATIONSHIPS) {
    const id = randomUUID()
    members.push(id)
    ch("add member", (d) => {
      if (!d.actors[author.actor]) d.actors[author.actor] = author.device
      d.network[id] = {
        created_by: by(), created_at: new Date(t), name: `${pick(GIVEN)} ${pick(FAMILY)}`,
        relationship, role, invited_by: "person", joined: "2026-01-12",
      }
    })
  }
  const meetings = []
  for (let week = 0; week < 3; week++) {
    const id = randomUUID()
    meetings.push(id)
    ch("add meeting", (d) => {
      d.meetings[id] = {
        created_by: by(), created_at: new Date(t), at: new Date(Date.UTC(2026, 0, 12 + 7 * week, 10)),
        place: "home", attendees: ["person", `member:${members[week % 5]}`, `member:${members[(week + 1) % 5]}`],
        notes: "", reflections: "", agreed: "", readback: {},
      }
    })
    for (let k = 0; k < 3; k++) {
      const text = notes(500)
      ch("append notes", (d) => {
        const cur = d.meetings[id].notes
        const insert = cur.length === 0 || cur.endsWith("\n") ? text : "\n" + text
        A.splice(d, ["meetings", id, "notes"], cur.length, 0, insert)
      })
    }
  }
  const decisions = []
  for (let i = 0; i < 3; i++) {
    const id = randomUUID()
    decisions.push(id)
    ch("propose decision", (d) => {
      d.decisions[id] = {
        created_by: by(), created_at: new Date(t), text: pick(DECISIONS), proposed_by: "person", status: "proposed",
        status_history: [{ status: "proposed", by: by(), at: new Date(t) }], positions: {}, actions: {},
      }
    })
    ch("record position", (d) => {
      d.decisions[id].positions.person = { stance: "agree", words: pick(WORDS), recorded_by: by(), at: new Date(t) }
    })
    ch("record position", (d) => {
      d.decisions[id].positions[`member:${members[i]}`] = { stance: i === 1 ? "disagree" : "unsure", words: pick(WORDS), recorded_by: by(), at: new Date(t) }
    })
  }
  return { doc, meetings, decisions }
}

// The same offline edit as caseload::edit_offline: ~400 bytes of notes and a changed position.
function editOffline(handle, rec, author) {
  const msg = (what) => JSON.stringify({ practitioner: author.practitioner, device: author.device, what })
  const m = rec.meetings[rec.meetings.length - 1]
  const text = "\n" + notes(400)
  handle.change((d) => A.splice(d, ["meetings", m, "notes"], d.meetings[m].notes.length, 0, text), { message: msg("append notes") })
  handle.change((d) => {
    d.decisions[rec.decisions[0]].positions.person = { stance: "unsure", words: pick(WORDS), recorded_by: { device: author.device }, at: new Date() }
  }, { message: msg("record position") })
}

function newAuthor(team) {
  const device = randomUUID()
  return { practitioner: randomUUID(), name: "Sam Adebayo", device, actor: device.replaceAll("-", ""), team }
}

// ---------------------------------------------------------------------------- server and clients

function rss(pid) {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"))
    return Number(line.replace(/[^0-9]/g, "")) * 1024
  } catch {
    return 0
  }
}

async function startServer() {
  const dir = mkdtempSync(path.join(tmpdir(), "amrepo-"))
  const child = spawn(process.execPath, [path.join(here, "server.mjs"), dir, "0"], { stdio: ["ignore", "pipe", "inherit"] })
  // Never leave the server behind, even when this driver dies of an error.
  process.on("exit", () => child.kill("SIGKILL"))
  const port = await new Promise((resolve, reject) => {
    child.stdout.once("data", (b) => resolve(JSON.parse(b.toString()).port))
    child.once("exit", (c) => reject(new Error(`server exited with ${c}`)))
  })
  let peak = 0
  const sampler = setInterval(() => (peak = Math.max(peak, rss(child.pid))), 20)
  return {
    url: `ws://127.0.0.1:${port}`,
    pid: child.pid,
    // Ids of documents stored since the previous call (all of them after a reset).
    cursor: 0,
    async stats(reset = false) {
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await fetch(`http://127.0.0.1:${port}/${reset ? "reset" : "stats"}?from=${reset ? 0 : this.cursor}`)
          const body = await r.json()
          this.cursor = body.next
          return body.saved
        } catch (e) {
          if (attempt >= 5) throw e
        }
      }
    },
    peak: () => peak,
    resetPeak: () => (peak = rss(child.pid)),
    async stop() {
      clearInterval(sampler)
      child.kill("SIGTERM")
      await new Promise((r) => child.once("exit", r))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

// Wait until the server has stored every id in `ids` (polling its storage every 5 ms).
async function untilStored(server, ids, onEach) {
  const want = new Set(ids)
  while (want.size > 0) {
    for (const id of await server.stats()) {
      if (want.delete(id)) onEach?.(id)
    }
    if (want.size > 0) await new Promise((r) => setTimeout(r, 5))
  }
}

function client(url) {
  const adapter = new WebSocketClientAdapter(url)
  const repo = new Repo({ network: [adapter], peerId: `device-${randomUUID()}` })
  return { repo, adapter }
}

function reconnect(c, url) {
  c.adapter = new WebSocketClientAdapter(url)
  c.repo.networkSubsystem.addNetworkAdapter(c.adapter)
}

// Repo.shutdown asserts on an adapter already disconnected (the one replaced at reconnect).
async function close(repo) {
  try {
    await repo.shutdown()
  } catch {}
}

const secs = (ms) => Math.round(ms) / 1000
const now = () => performance.now()

// ---------------------------------------------------------------------------- workloads

async function firstSync(cases) {
  const author = newAuthor(randomUUID())
  const t = now()
  const recs = Array.from({ length: cases }, () => careRecord(author))
  const generate = now() - t
  const saves = recs.map((r) => A.save(r.doc))
  const server = await startServer()
  server.resetPeak()

  // All at once by default; --batch N sends N documents at a time, each batch stored (or received)
  // before the next, for when the server cannot take a whole caseload at once.
  const batch = opt("batch", cases)
  const t0 = now()
  const a = client(server.url)
  const handles = []
  for (let i = 0; i < saves.length; i += batch) {
    const part = saves.slice(i, i + batch).map((bytes) => a.repo.import(bytes))
    handles.push(...part)
    await untilStored(server, part.map((h) => h.documentId))
  }
  const upload = now() - t0

  const t1 = now()
  const b = client(server.url)
  const got = []
  for (let i = 0; i < handles.length; i += batch) {
    got.push(...(await Promise.all(handles.slice(i, i + batch).map((h) => b.repo.find(h.url)))))
  }
  const download = now() - t1
  for (let i = 0; i < got.length; i++) {
    if (JSON.stringify(A.getHeads(got[i].doc())) !== JSON.stringify(A.getHeads(handles[i].doc()))) {
      throw new Error(`document ${i} differs on the second client`)
    }
  }
  const peak = server.peak()
  await close(a.repo)
  await close(b.repo)
  await server.stop()
  return {
    workload: "A", name: "first-sync", impl: "automerge-repo", cases, batch,
    upload_s: secs(upload), download_s: secs(download), total_s: secs(upload + download),
    server_rss_peak_bytes: peak, generate_s: secs(generate), doc_bytes: saves[0].length,
  }
}

async function reconnectWorkload(cases, edited) {
  const author = newAuthor(randomUUID())
  const recs = Array.from({ length: cases }, () => careRecord(author))
  const server = await startServer()
  const a = client(server.url)
  // Set-up, not timed: uploaded 100 at a time, since the server falls over when sent 1,000 at once.
  const handles = []
  for (let i = 0; i < recs.length; i += 100) {
    const part = recs.slice(i, i + 100).map((r) => a.repo.import(A.save(r.doc)))
    handles.push(...part)
    await untilStored(server, part.map((h) => h.documentId))
  }
  a.adapter.disconnect()
  await new Promise((r) => setTimeout(r, 200))
  for (let i = 0; i < edited; i++) editOffline(handles[i], recs[i], author)
  await server.stats(true)
  server.resetPeak()

  const t0 = now()
  reconnect(a, server.url)
  await untilStored(server, handles.slice(0, edited).map((h) => h.documentId))
  const total = now() - t0
  const peak = server.peak()
  await close(a.repo)
  await server.stop()
  return {
    workload: "B", name: "reconnect", impl: "automerge-repo", cases, edited,
    total_s: secs(total), server_rss_peak_bytes: peak,
  }
}

async function morning(devices, cases, edited) {
  const server = await startServer()
  const clients = []
  // Set-up, not timed: each device uploads its cases and waits until they are stored, one after
  // another (the server falls over when sent thousands of documents at once).
  for (let i = 0; i < devices; i++) {
    const author = newAuthor(randomUUID())
    const recs = Array.from({ length: cases }, () => careRecord(author))
    const c = client(server.url)
    const handles = recs.map((r) => c.repo.import(A.save(r.doc)))
    clients.push({ c, author, recs, handles })
    await untilStored(server, handles.map((h) => h.documentId))
  }
  for (const x of clients) x.c.adapter.disconnect()
  await new Promise((r) => setTimeout(r, 500))
  const owner = new Map()
  for (const [i, x] of clients.entries()) {
    for (let k = 0; k < edited; k++) {
      editOffline(x.handles[k], x.recs[k], x.author)
      owner.set(x.handles[k].documentId, i)
    }
  }
  await server.stats(true)
  server.resetPeak()

  const left = clients.map(() => edited)
  const times = []
  const t0 = now()
  for (const x of clients) reconnect(x.c, server.url)
  await untilStored(server, [...owner.keys()], (id) => {
    const i = owner.get(id)
    if (--left[i] === 0) times.push(now() - t0)
  })
  const wall = now() - t0
  const peak = server.peak()
  times.sort((x, y) => x - y)
  const pct = (p) => secs(times[Math.min(times.length, Math.max(1, Math.ceil(p * times.length))) - 1])
  for (const x of clients) await close(x.c.repo)
  await server.stop()
  return {
    workload: "C", name: "morning", impl: "automerge-repo", devices, cases: devices * cases,
    acknowledged_devices: times.length, wall_s: secs(wall), p50_s: pct(0.5), p99_s: pct(0.99), max_s: pct(1),
    server_rss_peak_bytes: peak,
  }
}

let result
if (workload === "first-sync") result = await firstSync(opt("cases", 1000))
else if (workload === "reconnect") result = await reconnectWorkload(opt("cases", 1000), opt("edited", 100))
else if (workload === "morning") result = await morning(opt("devices", 200), opt("cases", 20), opt("edited", 5))
else {
  process.stderr.write("usage: node driver.mjs first-sync|reconnect|morning [--cases N] [--edited N] [--devices N]\n")
  process.exit(2)
}
result.node = process.version
process.stdout.write(JSON.stringify(result) + "\n")
process.stderr.write(`automerge-repo ${result.workload}: ${JSON.stringify(result)}\n`)
process.exit(0)
