// Command argocd-health assesses objects with a health check configured in an argocd-cm
// ConfigMap, as `argocd admin settings resource-overrides health OBJ --argocd-cm-path CM` does:
// Argo CD's own settings manager reads the ConfigMap (on a fake clientset, as that command
// does), and gitops-engine's GetResourceHealth runs the Lua in Argo CD's util/lua VM
// (gopher-lua, the argocd-cm defaults: no open libraries, a 1 s limit).
//
//	argocd-health ARGOCD_CM DIR   run DIR/health_test.yaml (Argo CD's test format): print one
//	                              JSON line per test, {"inputPath", "healthStatus"} or "error"
//	kubectl get compressionjobs -o json | argocd-health ARGOCD_CM -
//	                              the same for an object or a List on stdin, {"name", ...}
//
// Built by build.sh; nothing in kondense imports it.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/argoproj/gitops-engine/pkg/health"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

type healthTests struct {
	Tests []struct {
		InputPath    string              `json:"inputPath"`
		HealthStatus health.HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

type result struct {
	InputPath    string               `json:"inputPath,omitempty"`
	Name         string               `json:"name,omitempty"`
	HealthStatus *health.HealthStatus `json:"healthStatus,omitempty"`
	Error        string               `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health ARGOCD_CM DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}

func run(cmPath, dir string) error {
	overrides, err := loadOverrides(cmPath)
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if dir == "-" {
		objects, err := readObjects(os.Stdin)
		if err != nil {
			return err
		}
		for i := range objects {
			res := assess(&objects[i], overrides)
			res.Name = objects[i].GetName()
			if err := out.Encode(res); err != nil {
				return err
			}
		}
		return nil
	}
	var tests healthTests
	if err := readYAML(filepath.Join(dir, "health_test.yaml"), &tests); err != nil {
		return err
	}
	for _, test := range tests.Tests {
		// As Argo CD's own TestLuaHealthScript reads its testdata (numbers become float64).
		obj := unstructured.Unstructured{}
		if err := readYAML(filepath.Join(dir, test.InputPath), &obj.Object); err != nil {
			return err
		}
		res := assess(&obj, overrides)
		res.InputPath = test.InputPath
		if err := out.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// assess is what the application controller does for each live object.
func assess(obj *unstructured.Unstructured, overrides map[string]v1alpha1.ResourceOverride) result {
	var res result
	status, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
	switch {
	case err != nil:
		res.Error = err.Error()
	case status == nil:
		res.Error = "no health check configured for " + obj.GroupVersionKind().GroupKind().String()
	default:
		res.HealthStatus = status
	}
	return res
}

// readObjects decodes one object or a List, JSON or YAML, with integers as int64 (as the
// controller's informers hold them).
func readObjects(in io.Reader) ([]unstructured.Unstructured, error) {
	data, err := io.ReadAll(in)
	if err != nil {
		return nil, err
	}
	if data, err = yaml.YAMLToJSON(data); err != nil {
		return nil, err
	}
	decoded, err := runtime.Decode(unstructured.UnstructuredJSONScheme, data)
	if err != nil {
		return nil, err
	}
	switch obj := decoded.(type) {
	case *unstructured.UnstructuredList:
		return obj.Items, nil
	case *unstructured.Unstructured:
		return []unstructured.Unstructured{*obj}, nil
	}
	return nil, fmt.Errorf("not an object or a List: %T", decoded)
}

// loadOverrides reads the resource customizations of an argocd-cm ConfigMap file the way the
// admin command's createSettingsManager does.
func loadOverrides(path string) (map[string]v1alpha1.ResourceOverride, error) {
	var cm corev1.ConfigMap
	if err := readYAML(path, &cm); err != nil {
		return nil, err
	}
	if cm.Name != common.ArgoCDConfigMapName {
		return nil, fmt.Errorf("%s: a ConfigMap named %s, not %q", path, common.ArgoCDConfigMapName, cm.Name)
	}
	secret := &corev1.Secret{Data: map[string][]byte{"admin.password": []byte("test"), "server.secretkey": []byte("test")}}
	secret.Name = common.ArgoCDSecretName
	for _, obj := range []interface {
		SetNamespace(string)
		GetLabels() map[string]string
		SetLabels(map[string]string)
	}{&cm, secret} {
		obj.SetNamespace("default")
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels["app.kubernetes.io/part-of"] = "argocd"
		obj.SetLabels(labels)
	}
	manager := settings.NewSettingsManager(context.Background(), fake.NewClientset(secret, &cm), "default")
	if err := manager.ResyncInformers(); err != nil {
		return nil, err
	}
	return manager.GetResourceOverrides()
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
