// A small typed use of the main routes with the types openapi-typescript
// generates from openapi.yaml. It is compiled, not run: `tsc --strict`
// failing here means a TypeScript user of the spec cannot write this code.
import type { components, paths } from "../types/wxtoken.js";

type Schemas = components["schemas"];

// Answer<P> is the JSON body of a 200 answer to POST P.
type Answer<P extends keyof paths> = paths[P] extends {
  post: { responses: { 200: { content: { "application/json": infer R } } } };
}
  ? R
  : never;

// Body<P> is the JSON request body of POST P (never when it takes none).
type Body<P extends keyof paths> = paths[P] extends {
  post: { requestBody: { content: { "application/json": infer B } } };
}
  ? B
  : never;

async function post<P extends keyof paths>(base: string, path: P, body: Body<P> | undefined, token?: string): Promise<Answer<P>> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (token !== undefined) headers["Authorization"] = `Bearer ${token}`;
  const res = await fetch(base + path, { method: "POST", headers, body: body === undefined ? null : JSON.stringify(body) });
  if (!res.ok) {
    const problem = (await res.json()) as Schemas["Problem"];
    throw new Error(`${problem.type}: ${problem.detail}`);
  }
  return (await res.json()) as Answer<P>;
}

export async function tour(base: string): Promise<void> {
  const login: Schemas["AccessToken"] = await post(base, "/v1/login", { code: "0a3Xyz" });
  const token: string = login.access_token;
  const expiresIn: number = login.expires_in;

  // /dev/encrypt takes any JSON object and answers typed fields.
  const enc = await post(base, "/dev/encrypt", { nickName: "Band", gender: 1, tags: ["a"] }, token);
  const encryptedData: string = enc.encryptedData;
  const iv: string = enc.iv;
  const rawData: string = enc.rawData;
  const signature: string = enc.signature;

  // The decrypted object: the watermark is typed, the rest is usable as unknown.
  const dec = await post(base, "/v1/decrypt", { encryptedData, iv }, token);
  const appid: string = dec.data.watermark.appid;
  const timestamp: number = dec.data.watermark.timestamp;
  const nickName: unknown = dec.data["nickName"];

  const info = await post(base, "/v1/userinfo", { rawData, signature, encryptedData, iv }, token);
  const profile: Record<string, unknown> = info.profile;
  const infoAppid: string | undefined = info.data?.watermark.appid;

  const phone = await post(base, "/v1/phone-number", { code: "phone-code" }, token);
  const pure: string = phone.purePhoneNumber;

  const check = await post(base, "/v1/session/check", undefined, token);
  const valid: boolean = check.valid;

  console.log(expiresIn, signature, appid, timestamp, nickName, profile, infoAppid, pure, valid);
}
