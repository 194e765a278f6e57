package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/go-playground/validator/v10"
	"github.com/labstack/echo/v4"
)

// bodyLimit bounds every request body. The largest legitimate body is a
// userinfo call with rawData and encryptedData, a few KiB.
const bodyLimit = 64 << 10

// binder decodes and validates JSON bodies the same way for every route:
// JSON only, one object, unknown fields ignored (mini programs often send the
// whole wx.getUserProfile result), then struct validation.
type binder struct {
	validate *validator.Validate
}

func newBinder() *binder {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		return name
	})
	return &binder{validate: v}
}

// bind fills dst from the request body or returns a Problem saying exactly
// what is wrong with the shape of the request (never with its secrets).
func (b *binder) bind(c echo.Context, dst any) error {
	req := c.Request()
	// The exact common value skips the parse (which allocates a map).
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" && ct != echo.MIMEApplicationJSON {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != echo.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
			return kindUnsupportedMedia.problem("Send JSON with Content-Type: application/json.")
		}
	}
	body, err := readBody(c.Response(), req)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return kindTooLarge.problemf("Request bodies are limited to %d bytes.", bodyLimit)
		}
		return kindInvalidRequest.problem("The request body could not be read.")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return kindInvalidRequest.problem("The request body is empty: send a JSON object.")
	}
	if err := json.Unmarshal(body, dst); err != nil {
		// Rare, so described the slow way: a Decoder tells a second value
		// and a cut-short body apart from other syntax errors.
		return kindInvalidRequest.problem(describeBody(body, dst))
	}
	if v := reflect.ValueOf(dst); v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	if err := b.validate.Struct(dst); err != nil {
		return kindInvalidRequest.problem(describeValidation(err))
	}
	return nil
}

// readBody reads a body of at most bodyLimit bytes. A small body that
// declares its length (every body of a normal call) is read into a buffer
// of exactly that size; anything else, larger or sent chunked, is read
// through http.MaxBytesReader into a buffer that grows only as bytes
// arrive. A declared length is never trusted for more than
// exactBodyLimit up front: a client that declares 64 KiB and then stalls
// must not hold 64 KiB of memory per connection for the read timeout.
func readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	n := req.ContentLength
	if n > bodyLimit {
		return nil, &http.MaxBytesError{Limit: bodyLimit}
	}
	if n < 0 || n > exactBodyLimit {
		return io.ReadAll(http.MaxBytesReader(w, req.Body, bodyLimit))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(req.Body, body); err != nil {
		return nil, err
	}
	return body, nil
}

// exactBodyLimit is the largest declared length readBody allocates before
// reading: about what one stalled connection may hold, and above every
// decrypt body and most userinfo bodies.
const exactBodyLimit = 4 << 10

// describeBody says what is wrong with a body json.Unmarshal refused.
func describeBody(body []byte, dst any) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(dst); err != nil {
		return describeJSONError(err)
	}
	if dec.More() {
		return "The request body holds more than one JSON value."
	}
	return "The body is not valid JSON."
}

func describeJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("The body is not valid JSON (syntax error at byte %d).", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("Field %q must be a JSON %s.", te.Field, jsonKind(te.Type.Kind().String()))
		}
		return "The body must be a JSON object."
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "The body is not valid JSON (it ends too early)."
	}
	return "The body is not valid JSON."
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "map", "struct":
		return "object"
	case "slice", "array":
		return "array"
	case "bool":
		return "boolean"
	}
	return "number"
}

func describeValidation(err error) string {
	var ves validator.ValidationErrors
	if !errors.As(err, &ves) || len(ves) == 0 {
		return "The request is invalid."
	}
	var parts []string
	for _, fe := range ves {
		name := fe.Field()
		switch fe.Tag() {
		case "required":
			parts = append(parts, fmt.Sprintf("%q is required and must not be empty", name))
		case "required_with":
			parts = append(parts, fmt.Sprintf("%q is required together with %q", name, fe.Param()))
		case "max":
			parts = append(parts, fmt.Sprintf("%q must be at most %s characters", name, fe.Param()))
		case "printascii":
			parts = append(parts, fmt.Sprintf("%q must be printable ASCII", name))
		default:
			parts = append(parts, fmt.Sprintf("%q is invalid (%s)", name, fe.Tag()))
		}
	}
	return "Invalid request: " + strings.Join(parts, "; ") + "."
}

func jsonEncode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
