package handlers_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// TestDecryptIsNoPaddingOracle: every key-dependent failure answers the
// same bytes, so a token holder cannot tell a padding error from any other.
func TestDecryptIsNoPaddingOracle(t *testing.T) {
	f := newFixture(t, options{})
	tok, login := wxtest.Login(t, f.srv.URL, appA, "code-oracle")
	sk := secret.String(f.wx.CurrentSessionKey(appA, login["openid"].(string)))
	other := secret.String("AAAAAAAAAAAAAAAAAAAAAA==")
	decrypt := func(data, iv string) wxtest.Answer {
		return wxtest.PostJSON(t, f.srv.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": data, "iv": iv})
	}

	plain := wxtest.UserInfo(appA, login, `"a":1`)
	good, iv, err := wechat.EncryptUserData(sk, plain)
	if err != nil {
		t.Fatal(err)
	}
	if a := decrypt(good, iv); a.Status != 200 {
		t.Fatalf("good data = %d %s", a.Status, a.Body)
	}
	notJSON, iv2, _ := wechat.EncryptUserData(sk, []byte(`this is not json at all`))
	otherApp, iv3, _ := wechat.EncryptUserData(sk, bytes.Replace(plain, []byte(appA), []byte("wxsomeoneelse0000"), 1))
	noMark, iv4, _ := wechat.EncryptUserData(sk, []byte(`{"nickName":"x"}`))
	wrongKey, iv5, _ := wechat.EncryptUserData(other, plain)
	share, iv6, _ := wechat.EncryptUserData(sk, []byte(`{"openGId":"tGOZ4d5Yerkj7xaK4SU9XMF9UwEM","watermark":{"appid":"`+appA+`","timestamp":1}}`))
	// The issue's attack: the iv rewrites block 1 to {"unionId":"evil…,
	// still JSON, watermark intact.
	ivb, _ := base64.StdEncoding.DecodeString(iv)
	for i, ch := range []byte(`{"unionId":"evil`) {
		ivb[i] ^= plain[i] ^ ch
	}
	evilIV := base64.StdEncoding.EncodeToString(ivb)
	raw, _ := base64.StdEncoding.DecodeString(good)
	raw[len(raw)-17] ^= 0x01 // flips the last plaintext byte: bad padding
	badPad := base64.StdEncoding.EncodeToString(raw)

	cases := map[string][2]string{
		"bad padding":        {badPad, iv},
		"not json":           {notJSON, iv2},
		"watermark of other": {otherApp, iv3},
		"no watermark":       {noMark, iv4},
		"wrong key":          {wrongKey, iv5},
		"iv of another call": {good, iv2},
		"iv rewrote block 1": {good, evilIV},
		"share info":         {share, iv6},
	}
	var first []byte
	for name, in := range cases {
		a := decrypt(in[0], in[1])
		wantProblem(t, answerOf(a), 400, "decryption-failed")
		if first == nil {
			first = a.Body
		} else if !bytes.Equal(first, a.Body) {
			t.Errorf("%s answered differently:\n%s\n%s", name, first, a.Body)
		}
	}
	// /v1/userinfo opens the same data the same way.
	a := wxtest.PostJSON(t, f.srv.URL+"/v1/userinfo", tok, map[string]string{"rawData": `{"nickName":"x"}`,
		"signature": wxtest.Signature(`{"nickName":"x"}`, sk.Reveal()), "encryptedData": good, "iv": evilIV})
	wantProblem(t, answerOf(a), 400, "decryption-failed")
	if !bytes.Equal(first, a.Body) {
		t.Errorf("userinfo with block 1 rewritten answered differently:\n%s\n%s", first, a.Body)
	}
	if !strings.Contains(string(first), "/v1/session/check") || !strings.Contains(string(first), "wx.login()") {
		t.Errorf("the decrypt failure does not point integrators to the usual cause: %s", first)
	}
}

// TestDecryptNamesKeyIndependentMistakes: mistakes any key would reject
// (transport damage, wrong lengths, not base64) are named, unlike the
// key-dependent failures above.
func TestDecryptNamesKeyIndependentMistakes(t *testing.T) {
	f := newFixture(t, options{})
	tok := f.login(t, appA, "code-mistakes")
	spaced := strings.ReplaceAll(wxtest.VectorEncryptedData, "+", " ")
	urlenc := strings.ReplaceAll(wxtest.VectorEncryptedData, "+", "%2B")
	for _, tc := range []struct {
		name, data, iv, want string
	}{
		{"plus became space", spaced, wxtest.VectorIV, "space"},
		{"url-encoded", urlenc, wxtest.VectorIV, "URL"},
		{"iv length", wxtest.VectorEncryptedData, base64.StdEncoding.EncodeToString([]byte("short")), "16"},
		{"not block multiple", base64.StdEncoding.EncodeToString([]byte("0123456789")), wxtest.VectorIV, "16"},
		{"not base64", "!!!!", wxtest.VectorIV, "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := wxtest.PostJSON(t, f.srv.URL+"/v1/decrypt", tok, map[string]string{"encryptedData": tc.data, "iv": tc.iv})
			p := wantProblem(t, answerOf(a), 400, "invalid-user-data")
			if !strings.Contains(strings.ToLower(p["detail"].(string)), strings.ToLower(tc.want)) {
				t.Errorf("detail %q does not name %q", p["detail"], tc.want)
			}
		})
	}
	wantProblem(t, answerOf(wxtest.PostJSON(t, f.srv.URL+"/v1/decrypt", tok, map[string]string{"iv": wxtest.VectorIV})), 400, "invalid-request")
}
