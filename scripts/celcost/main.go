// Prints the CEL cost the real API server (v1.36) estimates for every x-kubernetes-validations
// rule of the CRDs given as arguments (YAML files), with the code it runs when a CRD is created:
// one line per rule (CRD, schema path, index, the rule's cost, the number of times it can run,
// their product, the messageExpression's cost) and one with the CRD's total.
//
//	cd scripts/celcost && go run . ../../crds/*.yaml
//
// faultline's estimator (src/crd_validation/cost) is tested against this output:
// tests/fixtures/celcost/*.tsv, regenerated with `make celcost-fixtures`.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

func main() {
	envSet := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion())
	for _, file := range os.Args[1:] {
		data, err := os.ReadFile(file)
		if err != nil {
			fail(err)
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var crd apiextensionsv1.CustomResourceDefinition
			if err := yaml.UnmarshalStrict([]byte(doc), &crd); err != nil {
				fail(fmt.Errorf("%s: %w", file, err))
			}
			for _, version := range crd.Spec.Versions {
				if version.Schema == nil || version.Schema.OpenAPIV3Schema == nil {
					continue
				}
				var internal apiextensions.JSONSchemaProps
				if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(version.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
					fail(err)
				}
				root := validation.RootCELContext(&internal)
				walk(crd.Name, &internal, "openAPIV3Schema", root, envSet)
				fmt.Printf("%s\ttotal\t%d\n", crd.Name, root.TotalCost.Total)
			}
		}
	}
}

func walk(crd string, schema *apiextensions.JSONSchemaProps, path string, ctx *validation.CELSchemaContext, envSet *environment.EnvSet) {
	if len(schema.XValidations) > 0 {
		info, err := ctx.TypeInfo()
		if err != nil || info == nil {
			fail(fmt.Errorf("%s: no type info: %v", path, err))
		}
		results, err := cel.Compile(info.Schema, info.DeclType, celconfig.PerCallLimit, envSet, cel.NewExpressionsEnvLoader())
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		for i, r := range results {
			if r.Error != nil {
				fail(fmt.Errorf("%s: rule %d: %v", path, i, r.Error))
			}
			cardinality := r.MaxCardinality
			if ctx.MaxCardinality != nil {
				cardinality = *ctx.MaxCardinality
			}
			cost := mul(r.MaxCost, cardinality)
			ctx.TotalCost.ObserveExpressionCost(nil, cost)
			fmt.Printf("%s\t%s\t%d\t%d\t%d\t%d\t%d\n", crd, path, i, r.MaxCost, cardinality, cost, r.MessageExpressionMaxCost)
			if r.MessageExpression != nil {
				ctx.TotalCost.ObserveExpressionCost(nil, r.MessageExpressionMaxCost)
			}
		}
	}
	if schema.AdditionalProperties != nil && schema.AdditionalProperties.Schema != nil {
		walk(crd, schema.AdditionalProperties.Schema, path+".additionalProperties", ctx.ChildAdditionalPropertiesContext(schema.AdditionalProperties.Schema), envSet)
	}
	names := make([]string, 0, len(schema.Properties))
	for name := range schema.Properties {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		property := schema.Properties[name]
		walk(crd, &property, path+".properties["+name+"]", ctx.ChildPropertyContext(&property, name), envSet)
	}
	if schema.Items != nil && schema.Items.Schema != nil {
		walk(crd, schema.Items.Schema, path+".items", ctx.ChildItemsContext(schema.Items.Schema), envSet)
	}
}

func mul(a, b uint64) uint64 {
	if a == 0 {
		return 0
	}
	if ^uint64(0)/a < b {
		return ^uint64(0)
	}
	return a * b
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "celcost:", err)
	os.Exit(1)
}
