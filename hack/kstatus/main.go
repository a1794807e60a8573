// Command kstatus prints the kstatus verdict (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the
// library Flux, Helm 4's --wait and kpt judge readiness with) of the object `kubectl get -o json`
// writes to stdin: one JSON line {"name", "status", "message"} per object (a List gives one per item).
// tests/chart/test_kstatus_e2e.py holds our DatabaseMigration status to it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err == nil {
		obj := &unstructured.Unstructured{}
		if err = obj.UnmarshalJSON(in); err == nil {
			objects := []unstructured.Unstructured{*obj}
			if obj.IsList() {
				list, _ := obj.ToList()
				objects = list.Items
			}
			for i := range objects {
				res, cerr := status.Compute(&objects[i])
				if cerr != nil {
					err = cerr
					break
				}
				line, _ := json.Marshal(map[string]string{
					"name": objects[i].GetName(), "status": res.Status.String(), "message": res.Message,
				})
				fmt.Println(string(line))
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
