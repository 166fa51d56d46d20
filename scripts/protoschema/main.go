// Command protoschema writes the protobuf field tables that faultline's sandbox API server uses
// to read and write `application/vnd.kubernetes.protobuf` bodies
// (src/sandbox/apiserver/protobuf/schema.txt). It walks the Go types of k8s.io/api and
// k8s.io/apimachinery by reflection, from the kinds the sandbox serves down to every message
// they reach, and prints for each struct field what the generated Go (un)marshal code does with
// it: the protobuf field number and wire shape from the `protobuf` struct tag, the JSON name and
// omitempty/inline from the `json` tag, and whether Go holds it by pointer (sent only when set).
//
//	make proto-tables   (cd scripts/protoschema && go run . > ../../src/sandbox/apiserver/protobuf/schema.txt)
//
// To serve another built-in kind in protobuf, add it to roots and regenerate.
//
// The output is deterministic: messages sorted by name, fields by number.
package main

import (
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// root is a kind as it appears in runtime.Unknown's typeMeta.
type root struct {
	apiVersion string
	kind       string
	value      any
}

var roots = []root{
	{"v1", "Namespace", corev1.Namespace{}}, {"v1", "NamespaceList", corev1.NamespaceList{}},
	{"v1", "Node", corev1.Node{}}, {"v1", "NodeList", corev1.NodeList{}},
	{"v1", "Pod", corev1.Pod{}}, {"v1", "PodList", corev1.PodList{}},
	{"v1", "Service", corev1.Service{}}, {"v1", "ServiceList", corev1.ServiceList{}},
	{"v1", "ConfigMap", corev1.ConfigMap{}}, {"v1", "ConfigMapList", corev1.ConfigMapList{}},
	{"v1", "Secret", corev1.Secret{}}, {"v1", "SecretList", corev1.SecretList{}},
	{"v1", "ServiceAccount", corev1.ServiceAccount{}}, {"v1", "ServiceAccountList", corev1.ServiceAccountList{}},
	{"v1", "Event", corev1.Event{}}, {"v1", "EventList", corev1.EventList{}},
	{"apps/v1", "Deployment", appsv1.Deployment{}}, {"apps/v1", "DeploymentList", appsv1.DeploymentList{}},
	{"apps/v1", "ReplicaSet", appsv1.ReplicaSet{}}, {"apps/v1", "ReplicaSetList", appsv1.ReplicaSetList{}},
	{"events.k8s.io/v1", "Event", eventsv1.Event{}}, {"events.k8s.io/v1", "EventList", eventsv1.EventList{}},
	{"coordination.k8s.io/v1", "Lease", coordinationv1.Lease{}}, {"coordination.k8s.io/v1", "LeaseList", coordinationv1.LeaseList{}},
	{"policy/v1", "PodDisruptionBudget", policyv1.PodDisruptionBudget{}},
	{"policy/v1", "PodDisruptionBudgetList", policyv1.PodDisruptionBudgetList{}},
	{"policy/v1", "Eviction", policyv1.Eviction{}},
	{"autoscaling/v1", "Scale", autoscalingv1.Scale{}},
	// meta/v1 kinds travel with apiVersion "v1" whatever the group of the request.
	{"v1", "Status", metav1.Status{}},
	{"v1", "DeleteOptions", metav1.DeleteOptions{}},
	{"v1", "WatchEvent", metav1.WatchEvent{}},
}

// Types whose Go code (un)marshals them by hand; the Rust side knows their wire and JSON forms.
var special = map[reflect.Type]string{
	reflect.TypeFor[metav1.Time]():          "time",
	reflect.TypeFor[metav1.MicroTime]():     "microtime",
	reflect.TypeFor[metav1.FieldsV1]():      "fieldsv1",
	reflect.TypeFor[resource.Quantity]():    "quantity",
	reflect.TypeFor[intstr.IntOrString]():   "intorstring",
	reflect.TypeFor[runtime.RawExtension](): "rawextension",
}

func messageName(t reflect.Type) string {
	pkg := t.PkgPath()
	for _, prefix := range []string{"k8s.io/api/", "k8s.io/apimachinery/pkg/apis/"} {
		if strings.HasPrefix(pkg, prefix) {
			return strings.ReplaceAll(strings.TrimPrefix(pkg, prefix), "/", ".") + "." + t.Name()
		}
	}
	die("type %v from unexpected package %q", t, pkg)
	return ""
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "protoschema: "+format+"\n", args...)
	os.Exit(1)
}

type field struct {
	number int
	line   string
}

var (
	context  string
	messages = map[string][]field{}
	pending  []reflect.Type
)

func queue(t reflect.Type) string {
	name := messageName(t)
	if _, seen := messages[name]; !seen {
		messages[name] = nil
		pending = append(pending, t)
	}
	return name
}

// scalar names the wire and JSON shape of a non-message Go type.
func scalar(t reflect.Type, wire string) string {
	current := context
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	// Integers are always varints in the generated code, whatever the tag says (ListMeta's
	// remainingItemCount is tagged "bytes"); int32 ones are truncated when read.
	case reflect.Int32:
		return "int32"
	case reflect.Int64:
		return "int64"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
	}
	die("%s: unsupported scalar type %v (%s)", current, t, wire)
	return ""
}

// valueType names a field's element type: a scalar, a special type or msg:<name>.
func valueType(t reflect.Type, wire string) string {
	if s, ok := special[t]; ok {
		return s
	}
	if t.Kind() == reflect.Struct {
		return "msg:" + queue(t)
	}
	return scalar(t, wire)
}

func tagPart(tag, key string) (string, bool) {
	for _, p := range strings.Split(tag, ",") {
		if v, ok := strings.CutPrefix(p, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

func describe(t reflect.Type) {
	name := messageName(t)
	var fields []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		ptag, ok := f.Tag.Lookup("protobuf")
		if !ok {
			continue // TypeMeta and other fields that never travel in protobuf
		}
		parts := strings.Split(ptag, ",")
		var number int
		if _, err := fmt.Sscanf(parts[1], "%d", &number); err != nil {
			die("%s.%s: bad protobuf tag %q", name, f.Name, ptag)
		}
		wire := parts[0]
		jtag := f.Tag.Get("json")
		jparts := strings.Split(jtag, ",")
		jsonName := jparts[0]
		flags := []string{}
		for _, p := range jparts[1:] {
			if p == "omitempty" || p == "inline" {
				flags = append(flags, p)
			}
		}
		if jsonName == "-" {
			die("%s.%s travels in protobuf but not in JSON", name, f.Name)
		}
		if jsonName == "" {
			if !f.Anonymous {
				die("%s.%s has no JSON name", name, f.Name)
			}
			jsonName = "-"
			if !strings.Contains(jtag, "inline") {
				flags = append(flags, "inline")
			}
		}
		context = name + "." + f.Name
		ft := f.Type
		var kind string
		switch {
		case ft.Kind() == reflect.Pointer:
			flags = append(flags, "ptr")
			kind = valueType(ft.Elem(), wire)
		case ft.Kind() == reflect.Map:
			ktag, _ := f.Tag.Lookup("protobuf_key")
			vtag, _ := f.Tag.Lookup("protobuf_val")
			kwire := strings.Split(ktag, ",")[0]
			vwire := strings.Split(vtag, ",")[0]
			kind = "map:" + scalar(ft.Key(), kwire) + ":" + valueType(ft.Elem(), vwire)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() != reflect.Uint8:
			// Repeated because Go holds a slice, whatever the tag says (NodeSpec's podCIDRs
			// is tagged "opt").
			flags = append(flags, "rep")
			elem := ft.Elem()
			if elem.Kind() == reflect.Pointer {
				die("%s.%s: slice of pointers", name, f.Name)
			}
			kind = valueType(elem, wire)
		default:
			kind = valueType(ft, wire)
		}
		if _, cast := tagPart(ptag, "customtype"); cast {
			die("%s.%s: customtype is not supported", name, f.Name)
		}
		fields = append(fields, field{number, fmt.Sprintf("%d %s %s%s", number, jsonName, kind, joinFlags(flags))})
	}
	sort.Slice(fields, func(a, b int) bool { return fields[a].number < fields[b].number })
	for i := 1; i < len(fields); i++ {
		if fields[i].number == fields[i-1].number {
			die("%s: field number %d used twice", name, fields[i].number)
		}
	}
	messages[name] = fields
}

func joinFlags(flags []string) string {
	if len(flags) == 0 {
		return ""
	}
	sort.Strings(flags)
	return " " + strings.Join(flags, " ")
}

func main() {
	fmt.Println("# Protobuf field tables of the kinds faultline's sandbox API server reads and writes as")
	fmt.Println("# application/vnd.kubernetes.protobuf. Generated by scripts/protoschema from the Go types of")
	fmt.Println("# k8s.io/api and k8s.io/apimachinery v0.36.3; do not edit (see that program for the format).")
	fmt.Println("#")
	fmt.Println("# kind <apiVersion> <kind> <message>")
	fmt.Println("# message <name>, then one line per field: <number> <jsonName|- when inline> <type> [flags]")
	fmt.Println("#   type: string bool int32 int64 bytes time microtime fieldsv1 quantity intorstring")
	fmt.Println("#         rawextension msg:<name> map:<key type>:<value type>")
	fmt.Println("#   flags: inline (JSON fields merged into the parent), omitempty, ptr (Go pointer: on the")
	fmt.Println("#          wire only when set, so a zero value is meaningful), rep (repeated)")
	for _, r := range roots {
		t := reflect.TypeOf(r.value)
		fmt.Printf("kind %s %s %s\n", r.apiVersion, r.kind, queue(t))
	}
	for len(pending) > 0 {
		t := pending[0]
		pending = pending[1:]
		describe(t)
	}
	names := make([]string, 0, len(messages))
	for n := range messages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("message %s\n", n)
		for _, f := range messages[n] {
			fmt.Printf("  %s\n", f.line)
		}
	}
}
