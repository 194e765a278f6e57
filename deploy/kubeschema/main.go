// Command kubeschema writes strict JSON schemas, named as kubeconform looks
// them up, for every kind in a Kubernetes release's OpenAPI (v2) document.
//
// kubeconform fetches its schemas from GitHub, which CI cannot reach; the Go
// module proxy can serve k8s.io/kubernetes, whose api/openapi-spec/swagger.json
// is the API server's own description of every kind. This turns that document
// into the "standalone strict" layout kubeconform expects:
//
//   - one file per kind, <kind><suffix>.json (deployment-apps-v1.json,
//     service-v1.json), holding only the definitions that kind reaches;
//   - objects refuse unknown fields (additionalProperties: false), so a typo
//     such as "readinesProbe" is an error, not silently ignored;
//   - int-or-string and Quantity accept a number or a string, as the API
//     server does.
//
// Usage: kubeschema -swagger swagger.json -out DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kubeschema:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("kubeschema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	swaggerPath := fs.String("swagger", "", "the release's api/openapi-spec/swagger.json")
	out := fs.String("out", "", "directory to write the schemas to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *swaggerPath == "" || *out == "" {
		return errors.New("-swagger and -out are required")
	}
	raw, err := os.ReadFile(*swaggerPath)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("parse %s: %w", *swaggerPath, err)
	}
	if len(doc.Definitions) == 0 {
		return fmt.Errorf("%s has no definitions", *swaggerPath)
	}
	for name, def := range doc.Definitions {
		doc.Definitions[name] = strict(name, def).(map[string]any)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	n := 0
	for _, name := range sortedKeys(doc.Definitions) {
		for _, gvk := range kinds(doc.Definitions[name]) {
			schema := map[string]any{
				"$schema":     "http://json-schema.org/draft-07/schema#",
				"allOf":       []any{map[string]any{"$ref": "#/definitions/" + name}},
				"definitions": closure(doc.Definitions, name),
			}
			b, err := json.Marshal(schema)
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(*out, fileName(gvk)), b, 0o644); err != nil {
				return err
			}
			n++
		}
	}
	fmt.Fprintf(stderr, "kubeschema: wrote %d schemas to %s\n", n, *out)
	return nil
}

type gvk struct{ group, version, kind string }

// kinds lists the group/version/kinds a definition is the top-level schema of.
func kinds(def map[string]any) []gvk {
	list, _ := def["x-kubernetes-group-version-kind"].([]any)
	var out []gvk
	for _, item := range list {
		m, _ := item.(map[string]any)
		g, _ := m["group"].(string)
		v, _ := m["version"].(string)
		k, _ := m["kind"].(string)
		if v != "" && k != "" {
			out = append(out, gvk{g, v, k})
		}
	}
	return out
}

// fileName follows kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json:
// the kind in lower case, then the first label of the group, then the version.
func fileName(k gvk) string {
	suffix := "-" + strings.ToLower(k.version)
	if k.group != "" {
		suffix = "-" + strings.ToLower(strings.Split(k.group, ".")[0]) + suffix
	}
	return strings.ToLower(k.kind) + suffix + ".json"
}

// strict rewrites one schema node: closed objects, and the two string types
// the API server also accepts as numbers.
func strict(name string, node any) any {
	switch n := node.(type) {
	case map[string]any:
		if n["format"] == "int-or-string" || name == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
			return map[string]any{"oneOf": []any{
				map[string]any{"type": "string"}, map[string]any{"type": "integer"},
			}}
		}
		for k, v := range n {
			if k == "properties" {
				props, _ := v.(map[string]any)
				for pk, pv := range props {
					props[pk] = strict("", pv)
				}
				continue
			}
			n[k] = strict("", v)
		}
		if _, ok := n["properties"]; ok {
			if _, set := n["additionalProperties"]; !set {
				n["additionalProperties"] = false
			}
		}
		return n
	case []any:
		for i, v := range n {
			n[i] = strict("", v)
		}
		return n
	default:
		return node
	}
}

// closure is the set of definitions reachable from root through $ref.
func closure(defs map[string]map[string]any, root string) map[string]any {
	out := map[string]any{}
	var walk func(any)
	visit := func(name string) {
		if _, seen := out[name]; seen {
			return
		}
		def, ok := defs[name]
		if !ok {
			return
		}
		out[name] = def
		walk(def)
	}
	walk = func(node any) {
		switch n := node.(type) {
		case map[string]any:
			if ref, ok := n["$ref"].(string); ok {
				visit(strings.TrimPrefix(ref, "#/definitions/"))
			}
			for _, v := range n {
				walk(v)
			}
		case []any:
			for _, v := range n {
				walk(v)
			}
		}
	}
	visit(root)
	return out
}

func sortedKeys(m map[string]map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
