package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/wxtoken/wxtoken/secret"
)

// MaxEncryptedData bounds the base64 text DecryptUserData accepts. WeChat's
// largest payloads (run data for 30 days) stay well below it.
const MaxEncryptedData = 48 << 10

// sessionKeyBytes decodes a session_key: base64 of 16 bytes, AES-128.
func sessionKeyBytes(sk secret.String) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(sk.Reveal())
	if err != nil || len(k) != aes.BlockSize {
		return nil, ErrDecrypt
	}
	return k, nil
}

// ValidSessionKey reports whether sk has the shape WeChat gives (base64 of
// 16 bytes: 24 characters, line breaks being none of them), so a malformed
// answer is refused at login, not at first use.
func ValidSessionKey(sk secret.String) bool {
	_, err := sessionKeyBytes(sk)
	return err == nil && len(sk.Reveal()) == base64.StdEncoding.EncodedLen(aes.BlockSize)
}

// decodeField decodes one base64 field of user data and names, exactly,
// every mistake that can be seen without the key.
func decodeField(field, s string) ([]byte, error) {
	switch {
	case s == "":
		return nil, &InputError{field, "is empty"}
	case strings.ContainsAny(s, " \t\r\n"):
		return nil, &InputError{field, "contains spaces or line breaks: '+' characters were probably turned into spaces " +
			"by URL-decoding (a form body or query string). Send it in a JSON body exactly as wx.getUserProfile or the button event gave it"}
	case strings.Contains(s, "%"):
		return nil, &InputError{field, "looks URL-encoded (%2B, %2F, %3D): decode it once before sending, or send it in a JSON body unchanged"}
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.Strict().DecodeString(s)
	if err != nil {
		if strings.ContainsAny(s, "-_") {
			return nil, &InputError{field, "is base64url ('-' or '_'); WeChat's data is standard base64 with '+' and '/': send it unchanged"}
		}
		return nil, &InputError{field, "is not base64"}
	}
	return b, nil
}

// Owner is whom user data must belong to: the app and the user a verified
// token vouches for.
type Owner struct {
	AppID   string
	OpenID  string
	UnionID string
}

// The first 16 bytes (AES block 1) of each kind of user data WeChat
// encrypts. The caller supplies the IV, and in CBC the IV is XORed into
// block 1 alone, so a caller can rewrite block 1 at will without touching
// the watermark: block 1 is only trustworthy when it is exactly what WeChat
// writes there. User info begins with the openId, which the token names, so
// its whole block 1 is known; legacy phone numbers and run data begin with a
// 16-byte key. Share info ({"openGId":"…) is not among them: four characters
// of the group id sit in block 1, and nothing WeChat sends authenticates
// them, so a caller could make one share look like shares to many groups.
var (
	userInfoStart = []byte(`{"openId":`)
	phoneStart    = []byte(`{"phoneNumber":"`)
	runDataStart  = []byte(`{"stepInfoList":`)
)

// DecryptUserData opens encryptedData that WeChat made for this session
// (AES-128-CBC, PKCS#7), checks that its watermark names owner.AppID and
// that it is owner's: AES-CBC has no MAC and the caller picks the IV, so
// the plaintext is only believed where it can be checked.
//
//   - It must begin the way WeChat's user info, legacy phone number or run
//     data begins (see userInfoStart); anything else, share info included,
//     is refused.
//   - User info must carry openId equal to owner.OpenID and unionId equal to
//     owner.UnionID (both absent when the token has none); the other kinds
//     must carry neither, nor another kind's field.
//   - No object may repeat a key: a rewritten block inside a long string
//     (a nickname) could otherwise add a second "unionId" that parsers which
//     keep the first would believe.
//
// Errors that do not depend on the key are InputErrors naming the mistake.
// Every key-dependent failure is ErrDecrypt, reached through the same steps
// whatever went wrong: the padding is checked in constant time and the JSON
// parse, the watermark and owner checks run even when the padding is bad, so
// the answer and the path are one. The parse's time depends on where the
// plaintext stops being JSON; a tampered ciphertext garbles the block before
// the one it probes, so that point does not move with the padding's validity.
func DecryptUserData(sk secret.String, owner Owner, encryptedData, iv string) (json.RawMessage, error) {
	if len(encryptedData) > MaxEncryptedData {
		return nil, &InputError{"encryptedData", fmt.Sprintf("is over %d bytes", MaxEncryptedData)}
	}
	ct, err := decodeField("encryptedData", encryptedData)
	if err != nil {
		return nil, err
	}
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, &InputError{"encryptedData", fmt.Sprintf("decodes to %d bytes, not a multiple of 16 (the AES block size): "+
			"it was cut short or is not WeChat's encryptedData", len(ct))}
	}
	ivb, err := decodeField("iv", iv)
	if err != nil {
		return nil, err
	}
	if len(ivb) != aes.BlockSize {
		return nil, &InputError{"iv", fmt.Sprintf("decodes to %d bytes; it must be 16", len(ivb))}
	}
	key, err := sessionKeyBytes(sk)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrDecrypt
	}
	openID := quotedID(owner.OpenID)
	plain := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, ivb).CryptBlocks(plain, ct)

	n, padOK := unpad(plain)
	body := plain[:n]
	var doc struct {
		OpenID       string          `json:"openId"`
		UnionID      string          `json:"unionId"`
		PhoneNumber  json.RawMessage `json:"phoneNumber"`
		PurePhone    json.RawMessage `json:"purePhoneNumber"`
		StepInfoList json.RawMessage `json:"stepInfoList"`
		OpenGID      json.RawMessage `json:"openGId"`
		Watermark    struct {
			AppID string `json:"appid"`
		} `json:"watermark"`
	}
	jsonOK := 0
	if json.Unmarshal(body, &doc) == nil && len(body) > 0 && body[0] == '{' {
		jsonOK = 1
	}
	jsonOK &= uniqueKeys(body)
	// WeChat writes UTF-8. Refusing anything else also shuts the channel a
	// caller would use to learn how the key decrypts blocks of its choice:
	// a forged block inside a long string is answered back only if its 16
	// random-looking bytes are valid UTF-8 too, about one chance in ten
	// million instead of one in ten.
	if !utf8.Valid(body) {
		jsonOK = 0
	}
	markOK := subtle.ConstantTimeCompare([]byte(doc.Watermark.AppID), []byte(owner.AppID)) & subtle.ConstantTimeLessOrEq(1, len(owner.AppID))

	// Which kind block 1 says, checked on the whole plaintext (its length
	// is the ciphertext's, not secret) so every kind is tried every time.
	user := hasPrefix(plain, userInfoStart, openID)
	phone := hasPrefix(plain, phoneStart, nil)
	run := hasPrefix(plain, runDataStart, nil)
	foreignToUser := present(doc.PhoneNumber) | present(doc.PurePhone) | present(doc.StepInfoList) | present(doc.OpenGID)
	identity := subtle.ConstantTimeCompare([]byte(doc.OpenID), []byte(owner.OpenID)) & subtle.ConstantTimeLessOrEq(1, len(owner.OpenID)) &
		subtle.ConstantTimeCompare([]byte(doc.UnionID), []byte(owner.UnionID))
	noIdentity := subtle.ConstantTimeEq(int32(len(doc.OpenID)+len(doc.UnionID)), 0) & (1 ^ present(doc.OpenGID))
	ownerOK := user&identity&(1^foreignToUser) |
		phone&noIdentity&(1^present(doc.StepInfoList)) |
		run&noIdentity&(1^present(doc.PhoneNumber))&(1^present(doc.PurePhone))

	if padOK&jsonOK&markOK&ownerOK != 1 {
		clear(plain)
		return nil, ErrDecrypt
	}
	return json.RawMessage(body), nil
}

// quotedID is id as a JSON string when it has the shape of WeChat's ids
// ([A-Za-z0-9_-], which JSON writes as they are), and otherwise a value no
// plaintext block can begin with, so a token with an odd openid opens no
// user info. Built by hand: json.Marshal would take a buffer from a
// sync.Pool, whose hits vary, and the allocation count is how the tests
// see that every failure takes one path.
func quotedID(id string) []byte {
	q := make([]byte, 0, len(id)+2)
	q = append(q, '"')
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			return []byte{0}
		}
		q = append(q, ch)
	}
	return append(q, '"')
}

// hasPrefix reports 1 when b begins with start followed by rest, compared
// in constant time over the prefix's length.
func hasPrefix(b, start, rest []byte) int {
	n := len(start) + len(rest)
	if len(b) < n {
		return 0
	}
	return subtle.ConstantTimeCompare(b[:len(start)], start) & subtle.ConstantTimeCompare(b[len(start):n], rest)
}

func present(v json.RawMessage) int { return subtle.ConstantTimeLessOrEq(1, len(v)) }

// Limits of uniqueKeys' fixed-size bookkeeping: WeChat's user data nests
// three deep and its objects have a dozen keys at most.
const (
	maxKeyDepth = 16
	maxOpenKeys = 128
)

// uniqueKeys reports 1 when no JSON object in b repeats a key, compared
// without regard to ASCII case, and every key is plain ASCII without
// escapes, 0 otherwise (and for anything that is not one JSON value).
//
// WeChat's keys are fixed ASCII names, so a key with an escape or a
// non-ASCII byte can only be forged: refusing it closes the tricks a
// parser's key matching allows ("\u0075nionId", or "ſ" and the Kelvin sign,
// which encoding/json folds to "s" and "k"). It runs on every decryption
// (the JSON parse has already judged the syntax), so it is one pass over the
// bytes with fixed-size state and no allocation.
func uniqueKeys(b []byte) int {
	type span struct{ start, end int }
	type frame struct {
		isObj, expectKey bool
		keys             int // where this object's keys start in open
	}
	var stack [maxKeyDepth]frame
	var open [maxOpenKeys]span
	depth, nkeys, values := 0, 0, 0
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case ' ', '\t', '\n', '\r', ':':
		case ',':
			if depth > 0 && stack[depth-1].isObj {
				stack[depth-1].expectKey = true
			}
		case '{', '[':
			if depth == maxKeyDepth {
				return 0
			}
			stack[depth] = frame{isObj: c == '{', expectKey: c == '{', keys: nkeys}
			depth++
			values++
		case '}', ']':
			if depth == 0 || stack[depth-1].isObj != (c == '}') {
				return 0
			}
			depth--
			nkeys = stack[depth].keys
		case '"':
			start, plain := i+1, true
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					plain = false
					i++
				} else if b[i] >= 0x80 {
					plain = false
				}
			}
			if i >= len(b) {
				return 0
			}
			values++
			if depth == 0 || !stack[depth-1].isObj || !stack[depth-1].expectKey {
				continue
			}
			stack[depth-1].expectKey = false
			key := span{start, i}
			if !plain || nkeys == maxOpenKeys {
				return 0
			}
			for _, k := range open[stack[depth-1].keys:nkeys] {
				if asciiEqualFold(b[k.start:k.end], b[key.start:key.end]) {
					return 0
				}
			}
			open[nkeys] = key
			nkeys++
		default:
			values++ // a number or literal; the JSON parse judged its syntax
		}
	}
	return subtle.ConstantTimeEq(int32(depth), 0) & subtle.ConstantTimeLessOrEq(1, values)
}

// asciiEqualFold compares two ASCII strings without regard to case.
func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// unpad checks PKCS#7 padding in constant time. It returns the unpadded
// length (the whole length when the padding is bad, so the caller goes on
// the same way) and 1 when the padding is good.
func unpad(b []byte) (int, int) {
	n := len(b)
	pad := int(b[n-1])
	good := subtle.ConstantTimeLessOrEq(1, pad) & subtle.ConstantTimeLessOrEq(pad, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, pad)
		same := subtle.ConstantTimeByteEq(b[n-i], byte(pad))
		// where inPad, the byte must equal pad: good &= (1 - inPad) | same
		good &= (1 ^ inPad) | same
	}
	return subtle.ConstantTimeSelect(good, n-pad, n), good
}

// EncryptUserData encrypts plain the way WeChat does for a session: dev mode
// and tests use it to make data only that session can open.
func EncryptUserData(sk secret.String, plain []byte) (encryptedData, iv string, err error) {
	key, err := sessionKeyBytes(sk)
	if err != nil {
		return "", "", fmt.Errorf("wechat: encrypt: session_key is not base64 of 16 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return "", "", fmt.Errorf("wechat: encrypt: %w", err)
	}
	ivb := make([]byte, aes.BlockSize)
	if _, err := rand.Read(ivb); err != nil {
		return "", "", fmt.Errorf("wechat: encrypt: %w", err)
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	buf := make([]byte, len(plain)+pad)
	copy(buf, plain)
	for i := len(plain); i < len(buf); i++ {
		buf[i] = byte(pad)
	}
	cipher.NewCBCEncrypter(block, ivb).CryptBlocks(buf, buf)
	return base64.StdEncoding.EncodeToString(buf), base64.StdEncoding.EncodeToString(ivb), nil
}

// SignRawData is the signature WeChat gives with rawData: hex
// sha1(rawData + session_key). Dev mode and tests use it.
func SignRawData(sk secret.String, rawData string) string {
	sum := sha1.Sum([]byte(rawData + sk.Reveal()))
	return hex.EncodeToString(sum[:])
}

// VerifyRawData reports whether signature (hex, any case) is
// sha1(rawData + session_key), compared in constant time.
func VerifyRawData(sk secret.String, rawData, signature string) bool {
	got, err := hex.DecodeString(signature)
	if err != nil || len(got) != sha1.Size {
		return false
	}
	want := sha1.Sum([]byte(rawData + sk.Reveal()))
	return subtle.ConstantTimeCompare(got, want[:]) == 1
}

// sessionSignature is checksession's signature: hex HMAC-SHA256 keyed with
// the session_key text (not its decoded bytes) over the empty string.
func sessionSignature(sk secret.String) string {
	return hmacSHA256Hex([]byte(sk.Reveal()), nil)
}

func hmacSHA256Hex(key, msg []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))
}
