// Package deploy holds no code: it is the home of the tests that keep the deployment artefacts
// honest. The Kubernetes manifests (deploy/k8s, rendered with kustomize), the Prometheus alerts,
// the Grafana dashboard (deploy/grafana) and the Dockerfile are checked against the real
// Kubernetes API types (decoded strictly, so a misspelt field fails), against the metric names the
// daemon exports, and against the runbook anchors the alerts link to.
//
// It must not import any other edgesync package: deployment files describe the binary from the
// outside. The invariant that matters: every alert links to a runbook section that exists and
// queries only metrics the daemon really exports.
package deploy
