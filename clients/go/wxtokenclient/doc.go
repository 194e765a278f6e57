// Package wxtokenclient is the Go client that oapi-codegen generates from
// openapi.yaml with its default settings (types and client, nothing
// configured but the package name). It is committed so a reader sees what a
// user of the spec gets; CI regenerates it and fails on any difference, and
// a test logs in and decrypts with it against a live server, so the spec
// stays usable by generated clients.
package wxtokenclient

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -generate types,client -package wxtokenclient -o wxtoken.gen.go ../../../openapi.yaml
