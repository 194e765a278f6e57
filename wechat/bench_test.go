package wechat_test

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"testing"
)

// BenchmarkRawAESCBC is the floor of BenchmarkDecryptUserData/ok (what a
// bearer call to /v1/decrypt spends on the data: base64 of three fields,
// AES-128-CBC, constant-time unpadding, the JSON parse and the watermark
// check): the key schedule and the CBC decryption of the same ciphertext,
// already decoded, with nothing checked.
//
//	go test ./wechat/ -run '^$' -bench 'DecryptUserData/ok|RawAESCBC' -benchmem
func BenchmarkRawAESCBC(b *testing.B) {
	key, err := base64.StdEncoding.DecodeString(vectorSessionKey.Reveal())
	if err != nil {
		b.Fatal(err)
	}
	ct, err := base64.StdEncoding.DecodeString(vectorEncryptedData)
	if err != nil {
		b.Fatal(err)
	}
	iv, err := base64.StdEncoding.DecodeString(vectorIV)
	if err != nil {
		b.Fatal(err)
	}
	plain := make([]byte, len(ct))
	b.ReportAllocs()
	for b.Loop() {
		block, err := aes.NewCipher(key)
		if err != nil {
			b.Fatal(err)
		}
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	}
	if plain[0] != '{' {
		b.Fatalf("the vector did not decrypt: %q", plain[:16])
	}
}
