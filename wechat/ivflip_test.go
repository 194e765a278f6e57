package wechat_test

import (
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// withBlock1 answers the iv that makes encryptedData (made with iv) decrypt
// to plain with its first 16 bytes replaced by block1: in CBC the IV is
// XORed into block 1 alone, which is all a caller needs to rewrite it.
func withBlock1(tb testing.TB, iv string, plain []byte, block1 string) string {
	tb.Helper()
	if len(block1) != 16 {
		tb.Fatalf("block 1 %q is %d bytes", block1, len(block1))
	}
	b, err := base64.StdEncoding.DecodeString(iv)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range 16 {
		b[i] ^= plain[i] ^ block1[i]
	}
	return base64.StdEncoding.EncodeToString(b)
}

// TestIVCannotRewriteVerifiedFields flips block 1 of each kind of data
// WeChat encrypts, as the attacker did: every bit on its own, and
// rewrites chosen so the result is still JSON with an intact watermark.
// Nothing a downstream would trust may come back changed: each rewrite is
// refused with ErrDecrypt, the one key-dependent failure.
func TestIVCannotRewriteVerifiedFields(t *testing.T) {
	sk := secret.String("AAECAwQFBgcICQoLDA0ODw==")
	owner := wechat.Owner{AppID: "wxapp", OpenID: "oGZUI0egBJY1zhBYw2KhdUfwVJJE", UnionID: "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"}
	mark := `"watermark":{"appid":"wxapp","timestamp":1477314187}}`
	kinds := []struct {
		name     string
		plain    string
		genuine  bool     // WeChat's own bytes are answered
		rewrites []string // block 1 replacements that still parse
	}{
		{
			name: "user info",
			plain: `{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band","gender":1,"language":"zh_CN",` +
				`"city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/0",` +
				`"unionId":"ocMvos6NjeKLIBqg5Mr9QjxrP1FA",` + mark,
			genuine: true,
			// {"unionId":"evil…"} with openId gone, as in the issue; another
			// user's openId; the openId moved into another field.
			rewrites: []string{`{"unionId":"evil`, `{"openId":"oEvil`, `{"nickName":"oGZ`, `{"x":1,"y":"oGZU`},
		},
		{
			name:    "phone number, legacy button",
			plain:   `{"phoneNumber":"13580006666","purePhoneNumber":"13580006666","countryCode":"86",` + mark,
			genuine: true,
			// The number put under another key (countryCode twice), the
			// phoneNumber key renamed, an openId smuggled in.
			rewrites: []string{`{"countryCode":"`, `{"phoneNumbeR":"`, `{"openId":"     `, `{"unionId":    "`},
		},
		{
			name:    "run data",
			plain:   `{"stepInfoList":[{"timestamp":1445866601,"step":100},{"timestamp":1445876601,"step":120}],` + mark,
			genuine: true,
			// The steps renamed away, a top-level step count added.
			rewrites: []string{`{"stepInfoLisT":`, `{"step":9,"s":  `, `{"a":1,"list":  `},
		},
		{
			name:  "share info",
			plain: `{"openGId":"tGOZ4d5Yerkj7xaK4SU9XMF9UwEM",` + mark,
			// Four characters of the group id sit in block 1 and nothing
			// authenticates them: share info is never answered as verified.
			genuine:  false,
			rewrites: []string{`{"openGId":"EVIL`, `{"openGId":"tGOY`},
		},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			plain := []byte(k.plain)
			if !json.Valid(plain) {
				t.Fatalf("test data is not JSON: %s", plain)
			}
			data, iv, err := wechat.EncryptUserData(sk, plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := wechat.DecryptUserData(sk, owner, data, iv)
			switch {
			case k.genuine && (err != nil || string(got) != k.plain):
				t.Fatalf("WeChat's own data: %v %s", err, got)
			case !k.genuine && err != wechat.ErrDecrypt:
				t.Fatalf("unverifiable data answered: %v %s", err, got)
			}
			for _, r := range k.rewrites {
				rewritten := append([]byte(r), plain[16:]...)
				if !json.Valid(rewritten) {
					t.Fatalf("rewrite %q does not parse, so it proves nothing: %s", r, rewritten)
				}
				if got, err := wechat.DecryptUserData(sk, owner, data, withBlock1(t, iv, plain, r)); err != wechat.ErrDecrypt {
					t.Errorf("block 1 rewritten to %q: answered %s (err %v)", r, got, err)
				}
			}
			for bit := range 16 * 8 {
				flipped := []byte(k.plain[:16])
				flipped[bit/8] ^= 1 << (bit % 8)
				if got, err := wechat.DecryptUserData(sk, owner, data, withBlock1(t, iv, plain, string(flipped))); err != wechat.ErrDecrypt {
					t.Errorf("bit %d of block 1 flipped: answered %s (err %v)", bit, got, err)
				}
			}
		})
	}
}

// TestUserInfoMustBeTheTokensUser: user info names the user; it is answered
// only for the user the token vouches for, unionId included, and only when
// it says whose it is.
func TestUserInfoMustBeTheTokensUser(t *testing.T) {
	sk := secret.String("AAECAwQFBgcICQoLDA0ODw==")
	mark := `"watermark":{"appid":"wxapp","timestamp":1}}`
	tests := []struct {
		name   string
		owner  wechat.Owner
		plain  string
		answer bool
	}{
		{"same user, same unionId", wechat.Owner{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice"}, `{"openId":"oAlice","unionId":"uAlice",` + mark, true},
		{"same user, neither has unionId", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oAlice",` + mark, true},
		{"other user", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oMallory",` + mark, false},
		{"openId prefix of token's", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oAli",` + mark, false},
		{"other unionId", wechat.Owner{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice"}, `{"openId":"oAlice","unionId":"uMallory",` + mark, false},
		{"unionId the token lacks", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oAlice","unionId":"uMallory",` + mark, false},
		{"unionId missing", wechat.Owner{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice"}, `{"openId":"oAlice",` + mark, false},
		{"no openId", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"nickName":"Band",` + mark, false},
		{"openId not first", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"nickName":"Band","openId":"oAlice",` + mark, false},
		{"openid outside WeChat's alphabet", wechat.Owner{AppID: "wxapp", OpenID: `o"x`}, `{"openId":"o\"x",` + mark, false},
		// A block rewritten inside a string reads as random bytes; it is
		// answered (and so shown to the caller) only as valid UTF-8.
		{"string with bytes that are not UTF-8", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, "{\"openId\":\"oAlice\",\"nickName\":\"a\xff\xfe\x80b\"," + mark, false},
		{"string in UTF-8", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oAlice","nickName":"微信 ✓",` + mark, true},
		{"token without openid", wechat.Owner{AppID: "wxapp"}, `{"openId":"",` + mark, false},
		// A ciphertext block rewritten inside a long string (a nickname)
		// garbles that block and lets the caller write the next: it could
		// add a second unionId that parsers keeping the first believe.
		{"duplicate unionId", wechat.Owner{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice"},
			`{"openId":"oAlice","nickName":"x\u00e9\u00a7\u00c3","unionId":"uMallory","nickName2":"","unionId":"uAlice",` + mark, false},
		{"duplicate unionId in another case", wechat.Owner{AppID: "wxapp", OpenID: "oAlice", UnionID: "uAlice"},
			`{"openId":"oAlice","UnionID":"uMallory","unionId":"uAlice",` + mark, false},
		{"openid in lower case inside phone data", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"phoneNumber":"1","openid":"oAlice",` + mark, false},
		{"duplicate nested key", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"},
			`{"openId":"oAlice","watermark":{"appid":"wxother","appid":"wxapp","timestamp":1}}`, false},
		{"phone number inside user info", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"openId":"oAlice","phoneNumber":"13800000000",` + mark, false},
		{"openId inside phone data", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"phoneNumber":"1","openId":"oAlice",` + mark, false},
		{"steps inside phone data", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"phoneNumber":"1","stepInfoList":[],` + mark, false},
		{"phone number inside run data", wechat.Owner{AppID: "wxapp", OpenID: "oAlice"}, `{"stepInfoList":[],"phoneNumber":"1",` + mark, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, iv, err := wechat.EncryptUserData(sk, []byte(tc.plain))
			if err != nil {
				t.Fatal(err)
			}
			got, err := wechat.DecryptUserData(sk, tc.owner, data, iv)
			if tc.answer && (err != nil || string(got) != tc.plain) {
				t.Fatalf("refused: %v", err)
			}
			if !tc.answer && err != wechat.ErrDecrypt {
				t.Fatalf("answered %s (err %v), want ErrDecrypt", got, err)
			}
		})
	}
}
