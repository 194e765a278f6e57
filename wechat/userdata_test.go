package wechat_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wxtoken/wxtoken/internal/wxtest"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// vectorOwner is the user WeChat's published vector belongs to.
var vectorOwner = wechat.Owner{AppID: vectorAppID, OpenID: vectorOpenID, UnionID: vectorUnionID}

// WeChat's published vectors (internal/wxtest), typed as this package
// takes them.
const (
	vectorAppID         = wxtest.VectorAppID
	vectorSessionKey    = secret.String(wxtest.VectorSessionKey)
	vectorIV            = wxtest.VectorIV
	vectorEncryptedData = wxtest.VectorEncryptedData
	vectorOpenID        = wxtest.VectorOpenID
	vectorUnionID       = wxtest.VectorUnionID
	vectorRawData       = wxtest.VectorRawData
	vectorRawSessionKey = secret.String(wxtest.VectorRawSessionKey)
	vectorSignature     = wxtest.VectorSignature
)

func TestDecryptUserDataVector(t *testing.T) {
	data, err := wechat.DecryptUserData(vectorSessionKey, vectorOwner, vectorEncryptedData, vectorIV)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenID    string `json:"openId"`
		NickName  string `json:"nickName"`
		UnionID   string `json:"unionId"`
		Watermark wechat.Watermark
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.NickName != "Band" || doc.OpenID != vectorOpenID ||
		doc.UnionID != vectorUnionID || doc.Watermark.AppID != vectorAppID {
		t.Errorf("decrypted %+v", doc)
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	sk := secret.String("AAECAwQFBgcICQoLDA0ODw==")
	for _, n := range []int{0, 1, 15, 16, 17, 1000} {
		plain := `{"openId":"oUser","p":"` + strings.Repeat("x", n) + `","watermark":{"appid":"wxapp"}}`
		enc, iv, err := wechat.EncryptUserData(sk, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		got, err := wechat.DecryptUserData(sk, wechat.Owner{AppID: "wxapp", OpenID: "oUser"}, enc, iv)
		if err != nil || string(got) != plain {
			t.Fatalf("len %d: %v %q", n, err, got)
		}
	}
	if _, _, err := wechat.EncryptUserData("not a key", []byte("{}")); err == nil {
		t.Error("EncryptUserData accepted a malformed session_key")
	}
}

// TestDecryptKeyIndependentErrors: mistakes visible without the key are
// InputErrors naming the field and the mistake.
func TestDecryptKeyIndependentErrors(t *testing.T) {
	tests := []struct {
		name, data, iv, field, want string
	}{
		{"plus became space", strings.ReplaceAll(vectorEncryptedData, "+", " "), vectorIV, "encryptedData", "spaces"},
		{"url-encoded", strings.ReplaceAll(vectorEncryptedData, "+", "%2B"), vectorIV, "encryptedData", "URL-encoded"},
		{"base64url", strings.NewReplacer("+", "-", "/", "_").Replace(vectorEncryptedData), vectorIV, "encryptedData", "base64url"},
		{"not base64", "!!!!", vectorIV, "encryptedData", "not base64"},
		{"empty data", "", vectorIV, "encryptedData", "empty"},
		{"not block multiple", base64.StdEncoding.EncodeToString([]byte("0123456789")), vectorIV, "encryptedData", "multiple of 16"},
		{"too large", strings.Repeat("A", wechat.MaxEncryptedData+4), vectorIV, "encryptedData", "over"},
		{"iv short", vectorEncryptedData, base64.StdEncoding.EncodeToString([]byte("short")), "iv", "16"},
		{"iv spaces", vectorEncryptedData, "r7BXXKkLb8qrSNn05n0qiA= =", "iv", "spaces"},
		{"iv empty", vectorEncryptedData, "", "iv", "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := wechat.DecryptUserData(vectorSessionKey, vectorOwner, tc.data, tc.iv)
			var ie *wechat.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want InputError", err)
			}
			if ie.Field != tc.field || !strings.Contains(ie.Reason, tc.want) {
				t.Errorf("InputError{%q, %q}, want field %q mentioning %q", ie.Field, ie.Reason, tc.field, tc.want)
			}
		})
	}
	// Unpadded base64 is accepted: some clients strip '='.
	if _, err := wechat.DecryptUserData(vectorSessionKey, vectorOwner, strings.TrimRight(vectorEncryptedData, "="), strings.TrimRight(vectorIV, "=")); err != nil {
		t.Errorf("unpadded base64: %v", err)
	}
}

// TestDecryptKeyDependentErrorsAreOne: every failure that depends on the
// key is ErrDecrypt and nothing else, so no caller can build an oracle.
func TestDecryptKeyDependentErrorsAreOne(t *testing.T) {
	sk := secret.String("AAECAwQFBgcICQoLDA0ODw==")
	other := secret.String("DwAODQwLCgkIBwYFBAMCAQ==")
	enc := func(key secret.String, plain string) (string, string) {
		d, iv, err := wechat.EncryptUserData(key, []byte(plain))
		if err != nil {
			t.Fatal(err)
		}
		return d, iv
	}
	good, goodIV := enc(sk, `{"openId":"oUser","watermark":{"appid":"wxapp"}}`)
	raw, _ := base64.StdEncoding.DecodeString(good)
	raw[len(raw)-17] ^= 0x01
	badPad := base64.StdEncoding.EncodeToString(raw)
	type pair struct{ data, iv string }
	mk := func(d, iv string) pair { return pair{d, iv} }
	tests := map[string]pair{
		"bad padding":     {badPad, goodIV},
		"wrong key":       mk(enc(other, `{"openId":"oUser","watermark":{"appid":"wxapp"}}`)),
		"not json":        mk(enc(sk, `not json`)),
		"json array":      mk(enc(sk, `[{"openId":"oUser","watermark":{"appid":"wxapp"}}]`)),
		"other app":       mk(enc(sk, `{"openId":"oUser","watermark":{"appid":"wxother"}}`)),
		"no watermark":    mk(enc(sk, `{"openId":"oUser","a":1}`)),
		"empty appid":     mk(enc(sk, `{"openId":"oUser","watermark":{"appid":""}}`)),
		"appid prefix":    mk(enc(sk, `{"openId":"oUser","watermark":{"appid":"wxap"}}`)),
		"empty plaintext": mk(enc(sk, ``)),
		"no openId":       mk(enc(sk, `{"nickName":"x","watermark":{"appid":"wxapp"}}`)),
		"other openId":    mk(enc(sk, `{"openId":"oOther","watermark":{"appid":"wxapp"}}`)),
		"share info":      mk(enc(sk, `{"openGId":"tGabcdefghijklmnopqrstuvwxyz","watermark":{"appid":"wxapp"}}`)),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := wechat.DecryptUserData(sk, wechat.Owner{AppID: "wxapp", OpenID: "oUser"}, in.data, in.iv)
			if err != wechat.ErrDecrypt {
				t.Errorf("err = %v, want exactly ErrDecrypt", err)
			}
		})
	}
	if _, err := wechat.DecryptUserData("malformed", wechat.Owner{AppID: "wxapp", OpenID: "oUser"}, good, goodIV); err != wechat.ErrDecrypt {
		t.Errorf("malformed session key: %v", err)
	}
}

func TestVerifyRawData(t *testing.T) {
	tests := []struct {
		name string
		sk   secret.String
		raw  string
		sig  string
		want bool
	}{
		{"wechat example", vectorRawSessionKey, vectorRawData, vectorSignature, true},
		{"uppercase hex", vectorRawSessionKey, vectorRawData, strings.ToUpper(vectorSignature), true},
		{"other key", vectorSessionKey, vectorRawData, vectorSignature, false},
		{"changed data", vectorRawSessionKey, strings.Replace(vectorRawData, "Band", "Bond", 1), vectorSignature, false},
		{"short signature", vectorRawSessionKey, vectorRawData, vectorSignature[:38], false},
		{"not hex", vectorRawSessionKey, vectorRawData, strings.Repeat("z", 40), false},
		{"empty", vectorRawSessionKey, vectorRawData, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := wechat.VerifyRawData(tc.sk, tc.raw, tc.sig); got != tc.want {
				t.Errorf("VerifyRawData = %v, want %v", got, tc.want)
			}
		})
	}
	if got := wechat.SignRawData(vectorRawSessionKey, vectorRawData); got != vectorSignature {
		t.Errorf("SignRawData(WeChat's example) = %s, want %s", got, vectorSignature)
	}
}

// FuzzDecryptUserData: no input panics, and anything that decrypts is a
// JSON object stamped for the app.
func FuzzDecryptUserData(f *testing.F) {
	f.Add(vectorEncryptedData, vectorIV, string(vectorSessionKey))
	f.Add(strings.ReplaceAll(vectorEncryptedData, "+", " "), vectorIV, string(vectorSessionKey))
	f.Add("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA==")
	f.Add("", "", "")
	f.Add("%2B%2F", "=", "tiihtNczf5v6AKRyjwEUhQ")
	f.Fuzz(func(t *testing.T, data, iv, sk string) {
		out, err := wechat.DecryptUserData(secret.String(sk), vectorOwner, data, iv)
		if err != nil {
			return
		}
		var doc struct{ Watermark wechat.Watermark }
		if json.Unmarshal(out, &doc) != nil || doc.Watermark.AppID != vectorAppID {
			t.Fatalf("accepted %q", out)
		}
	})
}

func BenchmarkDecryptUserData(b *testing.B) {
	raw, _ := base64.StdEncoding.DecodeString(vectorEncryptedData)
	raw[len(raw)-17] ^= 0x01
	badPad := base64.StdEncoding.EncodeToString(raw)
	other, otherIV, _ := wechat.EncryptUserData(vectorSessionKey, []byte(strings.Repeat("x", len(raw)-20)))
	for _, bc := range []struct{ name, data, iv string }{
		{"ok", vectorEncryptedData, vectorIV},
		{"bad-padding", badPad, vectorIV},
		{"not-json", other, otherIV},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = wechat.DecryptUserData(vectorSessionKey, vectorOwner, bc.data, bc.iv)
			}
		})
	}
}
