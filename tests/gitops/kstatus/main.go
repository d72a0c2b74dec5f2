// Command kstatus computes the kstatus of Kubernetes objects with sigs.k8s.io/cli-utils'
// status.Compute, the function Flux's health checks (kustomize-controller, helm-controller)
// and `kubectl wait`-like tools call.
//
//	kubectl get compressionjobs -o json | kstatus
//
// Reads one object or a List as JSON (or YAML) on stdin; prints one JSON line per object:
// {"name", "status" (InProgress, Current, Failed, Terminating, NotFound, Unknown), "message"}.
// Built by build.sh; nothing in kondense imports it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, stdout io.Writer) error {
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	if data, err = yaml.YAMLToJSON(data); err != nil {
		return err
	}
	// The JSON scheme keeps integers int64, as objects read from the apiserver have them.
	decoded, err := runtime.Decode(unstructured.UnstructuredJSONScheme, data)
	if err != nil {
		return err
	}
	var objects []unstructured.Unstructured
	switch obj := decoded.(type) {
	case *unstructured.UnstructuredList:
		objects = obj.Items
	case *unstructured.Unstructured:
		objects = []unstructured.Unstructured{*obj}
	default:
		return fmt.Errorf("not an object or a List: %T", decoded)
	}
	out := json.NewEncoder(stdout)
	for i := range objects {
		res, err := status.Compute(&objects[i])
		if err != nil {
			return fmt.Errorf("%s: %w", objects[i].GetName(), err)
		}
		line := result{Name: objects[i].GetName(), Status: res.Status.String(), Message: res.Message}
		if err := out.Encode(line); err != nil {
			return err
		}
	}
	return nil
}
