// Package wechat is wxtoken's only caller of WeChat's servers and the only
// code that knows WeChat's user-data cryptography.
//
// The Client exchanges login codes (jscode2session), redeems phone-number
// codes, checks whether a session_key is still current, replaces it
// (resetusersessionkey) and asks a user's risk rank (getuserriskrank), for
// any number of apps, each with its own access_token and circuit breaker.
// It bounds every call (timeouts, a cap on calls in flight, a circuit
// breaker per app, capped answer
// headers and bodies), retries only what is safe to repeat (never a js_code,
// which is single-use: logins reuse pooled connections, but net/http cannot
// replay them), checks the shape of what WeChat answers, keeps the app's
// access_token in memory with one refresh at a time, and never puts a
// secret, a code or an access_token into an error or a log line, even when
// an answer echoes the request.
//
// DecryptUserData, EncryptUserData and VerifyRawData implement WeChat's
// AES-128-CBC user data and sha1(rawData + session_key) signatures. Every
// failure that depends on the key returns the one error ErrDecrypt, so a
// caller cannot be turned into a padding oracle; failures that do not depend
// on the key are named exactly (InputError) to help integrators.
package wechat
