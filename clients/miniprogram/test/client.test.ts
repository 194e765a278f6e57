// Tests the mini program client with node against a real wxtoken in dev
// mode (`wxtoken serve --dev`: WeChat emulated inside wxtoken). Only `wx`
// is stubbed, where WeChat's client would be: wx.login gives a code,
// wx.request makes the real HTTP call, storage is a Map.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { WxTokenClient, WxTokenError, type Wx } from "../src/index.js";

const repo = fileURLToPath(new URL("../../../..", import.meta.url));
let server: ChildProcess | undefined;
let baseURL = "";

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), "wxtoken-mp-"));
  const bin = process.env["WXTOKEN_BIN"] ?? join(dir, "wxtoken");
  if (process.env["WXTOKEN_BIN"] === undefined) execFileSync("go", ["build", "-o", bin, "."], { cwd: repo, stdio: "inherit" });
  server = spawn(bin, ["serve", "--dev"], {
    env: { PATH: process.env["PATH"] ?? "", WXTOKEN_ADDR: "127.0.0.1:0", WXTOKEN_KEYS_DIR: join(dir, "keys"), WXTOKEN_LOGIN_RATE: "0" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const stderr = server.stderr;
  assert.ok(stderr);
  baseURL = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("wxtoken did not start")), 30_000);
    server?.once("exit", (code) => reject(new Error(`wxtoken exited: ${code}`)));
    createInterface({ input: stderr }).on("line", (l) => {
      if (!l.startsWith("{")) return;
      const rec = JSON.parse(l) as { msg?: string; addr?: string };
      if (rec.msg === "listening" && rec.addr !== undefined) {
        clearTimeout(timer);
        resolve(`http://${rec.addr}`);
      }
    });
  });
});

after(() => {
  server?.kill();
});

interface StubWx extends Wx {
  logins: number;
  statuses: number[];
  storage: Map<string, unknown>;
  nextCode: () => string;
}

let codes = 0;

/** A wx whose network calls are real: only WeChat's client is replaced. */
function stubWx(): StubWx {
  const storage = new Map<string, unknown>();
  const wx: StubWx = {
    logins: 0,
    statuses: [],
    storage,
    nextCode: () => `mp-code-${++codes}`,
    login(o) {
      wx.logins++;
      const code = wx.nextCode();
      setTimeout(() => o.success({ code }), 0);
    },
    request(o) {
      fetch(o.url, {
        method: o.method,
        headers: o.header ?? {},
        ...(o.data === undefined ? {} : { body: JSON.stringify(o.data) }),
        signal: AbortSignal.timeout(o.timeout ?? 60_000),
      })
        .then(async (res) => {
          wx.statuses.push(res.status);
          const text = await res.text();
          const header: Record<string, string> = {};
          res.headers.forEach((v, k) => (header[k] = v));
          o.success({ statusCode: res.status, data: text === "" ? "" : (JSON.parse(text) as unknown), header });
        })
        .catch((e: unknown) => o.fail({ errMsg: `request:fail ${String(e)}` }));
    },
    getStorageSync: (k) => storage.get(k) ?? "",
    setStorageSync: (k, v) => void storage.set(k, v),
    removeStorageSync: (k) => void storage.delete(k),
  };
  return wx;
}

/** What wx.getUserInfo would give the mini program, from the dev route. */
async function userData(token: string, obj: object) {
  const res = await fetch(`${baseURL}/dev/encrypt`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(obj),
  });
  assert.equal(res.status, 200);
  return (await res.json()) as { encryptedData: string; iv: string; rawData: string; signature: string };
}

test("login keeps the token; decrypt, userinfo, phoneNumber and checkSession use it", async () => {
  const wx = stubWx();
  const client = new WxTokenClient({ baseURL, wx });
  const answer = await client.login();
  assert.equal(answer.token_type, "Bearer");
  assert.equal(client.token, answer.access_token);
  assert.deepEqual((wx.storage.get("wxtoken") as { token: string }).token, answer.access_token);

  const enc = await userData(answer.access_token, { nickName: "Band", gender: 1 });
  const dec = await client.decrypt({ encryptedData: enc.encryptedData, iv: enc.iv });
  assert.equal(dec.data["nickName"], "Band");
  assert.ok(dec.data.watermark.appid.length > 0);
  assert.ok(dec.data.watermark.timestamp > 0);

  const info = await client.userinfo(enc);
  assert.equal(info.profile["nickName"], "Band");
  assert.equal(info.data?.watermark.appid, dec.data.watermark.appid);

  const phone = await client.phoneNumber("phone-code-1");
  assert.ok(phone.purePhoneNumber.length > 0);

  assert.deepEqual(await client.checkSession(), { valid: true });
  assert.equal(wx.logins, 1);
  assert.ok(!wx.statuses.includes(401));
});

test("a call without a token logs in first; concurrent calls share one login", async () => {
  const wx = stubWx();
  const client = new WxTokenClient({ baseURL, wx });
  const [a, b, c] = await Promise.all([client.checkSession(), client.checkSession(), client.checkSession()]);
  assert.deepEqual([a.valid, b.valid, c.valid], [true, true, true]);
  assert.equal(wx.logins, 1);
});

test("a refused kept token (401) makes one new login and one retry", async () => {
  const wx = stubWx();
  const first = new WxTokenClient({ baseURL, wx });
  await first.login();
  const kept = wx.storage.get("wxtoken") as { token: string; expiresAt: number };
  // A token wxtoken refuses, as after an emergency key rotation.
  wx.storage.set("wxtoken", { token: kept.token.slice(0, -6) + "AAAAAA", expiresAt: kept.expiresAt });
  const client = new WxTokenClient({ baseURL, wx });
  wx.statuses.length = 0;
  assert.deepEqual(await client.checkSession(), { valid: true });
  assert.deepEqual(wx.statuses, [401, 200, 200]); // refused, login, retry
  assert.equal(wx.logins, 2);
  assert.notEqual(client.token, kept.token);
});

test("a login WeChat refuses throws wxtoken's problem", async () => {
  const wx = stubWx();
  wx.nextCode = () => "err-40029";
  const client = new WxTokenClient({ baseURL, wx });
  await assert.rejects(client.decrypt({ encryptedData: "AAAA", iv: "AAAA" }), (e: unknown) => {
    assert.ok(e instanceof WxTokenError);
    assert.equal(e.status, 400);
    assert.equal(e.problem?.type, "urn:wxtoken:problem:invalid-code");
    return true;
  });
  assert.equal(client.token, undefined);
});
