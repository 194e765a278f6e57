package wechat

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/wxtoken/wxtoken/secret"
)

func TestUnpad(t *testing.T) {
	block := func(tail ...byte) []byte {
		b := make([]byte, 16)
		for i := range b {
			b[i] = 'x'
		}
		copy(b[16-len(tail):], tail)
		return b
	}
	full := make([]byte, 32)
	for i := 16; i < 32; i++ {
		full[i] = 16
	}
	tests := []struct {
		name string
		in   []byte
		n    int
		ok   int
	}{
		{"one byte", block(1), 15, 1},
		{"two bytes", block(2, 2), 14, 1},
		{"full block", full, 16, 1},
		{"zero", block(0), 16, 0},
		{"over block size", block(17), 16, 0},
		{"inconsistent", block(3, 2, 3), 16, 0},
		{"255", block(255), 16, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := unpad(tc.in)
			if n != tc.n || ok != tc.ok {
				t.Errorf("unpad = (%d, %d), want (%d, %d)", n, ok, tc.n, tc.ok)
			}
		})
	}
}

// TestHMACMatchesWeChatExample: WeChat's worked example keys HMAC-SHA256
// with the session_key text itself, not its decoded bytes.
func TestHMACMatchesWeChatExample(t *testing.T) {
	got := hmacSHA256Hex([]byte("o0q0otL8aEzpcZL/FT9WsQ=="), []byte(`{"foo":"bar"}`))
	if !strings.HasPrefix(got, "654571f7") {
		t.Errorf("hmac = %s, want 654571f7…", got)
	}
}

// encryptRaw CBC-encrypts plain (a whole number of blocks) with no padding
// added, so tests can choose whether the padding is valid.
func encryptRaw(tb testing.TB, key, iv, plain []byte) string {
	tb.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]byte, len(plain))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out, plain)
	return base64.StdEncoding.EncodeToString(out)
}

// BenchmarkPaddingOracle measures the one question a padding-oracle attack
// asks: does a garbage plaintext with valid padding take a different time
// from the same garbage with invalid padding? The two sub-benchmarks
// should report the same time within noise.
func BenchmarkPaddingOracle(b *testing.B) {
	key := []byte("0123456789abcdef")
	iv := []byte("fedcba9876543210")
	sk := secret.String(base64.StdEncoding.EncodeToString(key))
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	valid := append([]byte(nil), garbage...)
	valid[255] = 1 // one byte of padding: valid
	invalid := append([]byte(nil), garbage...)
	invalid[255] = 0 // padding byte 0: invalid
	for _, bc := range []struct {
		name  string
		plain []byte
	}{{"valid-padding", valid}, {"invalid-padding", invalid}} {
		data := encryptRaw(b, key, iv, bc.plain)
		ivText := base64.StdEncoding.EncodeToString(iv)
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := DecryptUserData(sk, Owner{AppID: "wxapp", OpenID: "oUser"}, data, ivText); err != ErrDecrypt {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestKeyDependentFailuresTakeOnePath: decryption must not return early on
// bad padding (that early exit is what a padding oracle times). Timing is too
// noisy to assert in a test, but the path shows in the allocation count:
// garbage with valid padding, garbage with invalid padding, and real data
// opened with the wrong key must all allocate exactly alike.
func TestKeyDependentFailuresTakeOnePath(t *testing.T) {
	key := []byte("0123456789abcdef")
	iv := []byte("fedcba9876543210")
	sk := secret.String(base64.StdEncoding.EncodeToString(key))
	ivText := base64.StdEncoding.EncodeToString(iv)
	garbage := make([]byte, 256)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	validPad := append([]byte(nil), garbage...)
	validPad[255] = 1
	invalidPad := append([]byte(nil), garbage...)
	invalidPad[255] = 0
	realData, _, err := EncryptUserData(secret.String(base64.StdEncoding.EncodeToString([]byte("another-key-0123"))),
		[]byte(`{"openId":"oUser","nickName":"Band","watermark":{"appid":"wxapp","timestamp":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"garbage, valid padding":   encryptRaw(t, key, iv, validPad),
		"garbage, invalid padding": encryptRaw(t, key, iv, invalidPad),
		"data for another key":     realData,
	}
	allocs := map[string]float64{}
	for name, data := range cases {
		allocs[name] = testing.AllocsPerRun(200, func() {
			if _, err := DecryptUserData(sk, Owner{AppID: "wxapp", OpenID: "oUser"}, data, ivText); err != ErrDecrypt {
				t.Fatalf("%s: err = %v, want ErrDecrypt", name, err)
			}
		})
	}
	want := allocs["garbage, invalid padding"]
	for name, n := range allocs {
		if n != want {
			t.Errorf("%s allocates %v times, invalid padding %v: the failures take different paths", name, n, want)
		}
	}
}

// TestOwnerRefusalTakesTheAcceptPath: refusing data whose block 1 a caller
// rewrote (another openId, same shape) must not take a path of its own: it
// allocates exactly as opening the genuine data does, and the answer is
// ErrDecrypt like every other key-dependent failure.
func TestOwnerRefusalTakesTheAcceptPath(t *testing.T) {
	sk := secret.String(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")))
	owner := Owner{AppID: "wxapp", OpenID: "oGZUI0egBJY1zhBYw2KhdUfwVJJE"}
	plain := []byte(`{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","watermark":{"appid":"wxapp","timestamp":1}}`)
	data, iv, err := EncryptUserData(sk, plain)
	if err != nil {
		t.Fatal(err)
	}
	ivb, _ := base64.StdEncoding.DecodeString(iv)
	ivb[11] ^= 'o' ^ 'x' // openId "xGZUI…": still JSON, another user
	flipped := base64.StdEncoding.EncodeToString(ivb)
	accept := testing.AllocsPerRun(200, func() {
		if _, err := DecryptUserData(sk, owner, data, iv); err != nil {
			t.Fatal(err)
		}
	})
	refuse := testing.AllocsPerRun(200, func() {
		if _, err := DecryptUserData(sk, owner, data, flipped); err != ErrDecrypt {
			t.Fatalf("rewritten openId: err = %v, want ErrDecrypt", err)
		}
	})
	if accept != refuse {
		t.Errorf("accepting allocates %v times, refusing a rewritten openId %v: the owner check has a path of its own", accept, refuse)
	}
}

func TestUniqueKeys(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`{}`, 1},
		{`{"a":1,"b":{"a":1},"c":[{"a":1},{"a":2}]}`, 1},
		{`{"a":[1,{"b":[]}],"b":2}`, 1},
		{`{"a":1,"a":2}`, 0},
		{`{"a":1,"A":2}`, 0},
		{`{"a":1,"\u0061":2}`, 0},
		{`{"\u0061":1}`, 0},
		{`{"stepInfoList":[1],"ſtepInfoList":[2]}`, 0},
		{`{"k":1,"K":2}`, 0},
		{`{"nickName":"雪\"}{","x":"\\"}`, 1},
		{`{"a":"}","b":"{"}`, 1},
		{`{"a":[}`, 0},
		{`{"a":{]}`, 0},
		{`"x"`, 1},
		{`{"w":{"appid":"x","appid":"y"}}`, 0},
		{`{"l":[{"k":1,"k":2}]}`, 0},
		{`{"a":{},"a":[]}`, 0},
		{`}`, 0},
		{`{"a":1}}`, 0},
		{`{"a":1`, 0},
		{``, 0},
	}
	for _, tc := range tests {
		if got := uniqueKeys([]byte(tc.in)); got != tc.want {
			t.Errorf("uniqueKeys(%s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
