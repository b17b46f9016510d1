package deploy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/edgesync/edgesync/config"
)

// The tests run in deploy/, so the repository root is one up.
const root = ".."

const runbookURLPrefix = "https://github.com/edgesync/edgesync/blob/main/docs/runbook.md#"

// metricLabels is every metric the manifests, alerts and dashboard may use, with the labels the
// daemon puts on it. CONTRACT section 9 plus the extensions the deployment relies on; the daemon
// must export exactly these names.
var metricLabels = map[string][]string{
	// CONTRACT section 9.
	"edgesync_cdc_events_total":       {"table", "op"},
	"edgesync_cdc_confirmed_lsn":      nil,
	"edgesync_cdc_slot_lag_bytes":     nil,
	"edgesync_publish_errors_total":   nil,
	"edgesync_edges":                  {"backend", "artifact", "present"},
	"edgesync_sync_edges":             {"backend", "state"},
	"edgesync_reconcile_runs_total":   {"result"},
	"edgesync_reconcile_found_total":  {"kind"},
	"edgesync_icp_upload_bytes_total": nil,
	"edgesync_leader":                 nil,
	// Extensions the alerts and dashboard need (see docs/deploy.md, "Metrics").
	"edgesync_cdc_slot_lost_total":               nil,
	"edgesync_icp_upload_failures_total":         nil,
	"edgesync_backend_up":                        {"backend"},
	"edgesync_backend_latency_seconds":           {"backend"},
	"edgesync_edges_bytes":                       {"backend", "artifact", "present"},
	"edgesync_memories":                          {"memory_type"},
	"edgesync_reconcile_duration_seconds_bucket": {"le"},
	"edgesync_reconcile_duration_seconds_sum":    nil,
	"edgesync_reconcile_duration_seconds_count":  nil,
	"edgesync_cdc_decode_lag_seconds_bucket":     {"le"},
	"edgesync_cdc_decode_lag_seconds_sum":        nil,
	"edgesync_cdc_decode_lag_seconds_count":      nil,
	// The HTTP API's own metrics (internal/api).
	"edgesync_http_requests_total":                  {"route", "code"},
	"edgesync_http_request_duration_seconds_bucket": {"route", "le"},
	"edgesync_http_request_duration_seconds_sum":    {"route"},
	"edgesync_http_request_duration_seconds_count":  {"route"},
	"edgesync_http_panics_total":                    nil,
	"edgesync_sse_clients":                          nil,
	"edgesync_sse_dropped_total":                    nil,
	// Prometheus itself and the client library's process collector.
	"up":                            nil,
	"process_resident_memory_bytes": nil,
	// cAdvisor (kubelet): the container's memory limit, for alerts relative to it.
	"container_spec_memory_limit_bytes": {"container"},
}

// labelValues restricts the values an equality matcher may compare a label with.
var labelValues = map[string]map[string][]string{
	"edgesync_sync_edges": {
		"backend": {"neon-db", "vercel-blob", "icp-canister"},
		"state":   {"idle", "migrating", "failed"},
	},
	"edgesync_edges": {
		"backend":  {"neon-db", "vercel-blob", "icp-canister"},
		"artifact": {"metadata", "asset"},
		"present":  {"true", "false"},
	},
	"edgesync_edges_bytes": {
		"backend":  {"neon-db", "vercel-blob", "icp-canister"},
		"artifact": {"metadata", "asset"},
		"present":  {"true", "false"},
	},
	"edgesync_backend_up":              {"backend": {"postgres", "nats", "icp", "blob"}},
	"edgesync_backend_latency_seconds": {"backend": {"postgres", "nats", "icp", "blob"}},
	"edgesync_reconcile_runs_total":    {"result": {"ok", "error"}},
	"edgesync_reconcile_found_total": {
		"kind": {"orphans", "missing", "drift", "stuck", "failed_retried", "icp_drift"},
	},
	"edgesync_memories": {"memory_type": {"image", "video", "note", "document", "audio"}},
	"up":                {"job": {"edgesync"}},
}

// targetLabels are attached by Prometheus to every scraped series.
// `pipeline` is the pods' app.kubernetes.io/instance, copied by the ServiceMonitor's relabeling.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "container", "endpoint", "pipeline"}

// settings are the environment variables the daemon reads, from the config code itself.
var settings = func() []string {
	var out []string
	for _, r := range config.Reference() {
		out = append(out, r.Env)
	}
	return out
}()

// mirrorWorkers is how many assets the ICP mirror downloads and uploads at once (the daemon's
// fixed concurrency, docs/icp.md); each may spool up to EDGESYNC_ASSET_MAX_BYTES.
const mirrorWorkers = 4

// defaultAssetMaxBytes is EDGESYNC_ASSET_MAX_BYTES' default (64 MiB, the canister's maximum).
var defaultAssetMaxBytes = config.Default().AssetMaxBytes

// secretSettings must come from the Secret, never from a literal or the ConfigMap.
var secretSettings = []string{"EDGESYNC_DATABASE_URL", "EDGESYNC_ADMIN_TOKEN"}

// requiredSecrets are the Secret keys without which nothing works; the others belong to optional
// features and are referenced with optional: true.
var requiredSecrets = []string{"EDGESYNC_DATABASE_URL"}

// ServiceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor the manifests use;
// decoding is strict, so any other field fails the test.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			HonorLabels   bool   `json:"honorLabels,omitempty"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels,omitempty"`
				TargetLabel  string   `json:"targetLabel,omitempty"`
			} `json:"relabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// PrometheusRule is the part of monitoring.coreos.com/v1 PrometheusRule the manifests use.
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name     string `json:"name"`
			Interval string `json:"interval,omitempty"`
			Rules    []Rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `json:"alert,omitempty"`
	Record      string            `json:"record,omitempty"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// rendered is one kustomization's output, every object decoded into its type.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	configMap      *corev1.ConfigMap
	pdb            *policyv1.PodDisruptionBudget
	networkPolicy  *networkingv1.NetworkPolicy
	serviceMonitor *ServiceMonitor
	prometheusRule *PrometheusRule
}

// render runs kustomize on dir (relative to the repository root) and decodes every object
// strictly. Unknown kinds, duplicate kinds and unknown fields fail the test.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	return renderOpt(t, dir, true)
}

// renderOpt is render; withRules false accepts a kustomization without a PrometheusRule (a second
// pipeline, whose alerts come from the first one's rules).
func renderOpt(t *testing.T, dir string, withRules bool) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out rendered
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s/%s as YAML: %v", dir, r.GetKind(), r.GetName(), err)
		}
		var target any
		switch r.GetKind() {
		case "Deployment":
			target = setOnce(t, &out.deployment)
		case "Service":
			target = setOnce(t, &out.service)
		case "ServiceAccount":
			target = setOnce(t, &out.serviceAccount)
		case "ConfigMap":
			target = setOnce(t, &out.configMap)
		case "PodDisruptionBudget":
			target = setOnce(t, &out.pdb)
		case "NetworkPolicy":
			target = setOnce(t, &out.networkPolicy)
		case "ServiceMonitor":
			target = setOnce(t, &out.serviceMonitor)
		case "PrometheusRule":
			target = setOnce(t, &out.prometheusRule)
		default:
			// A Secret here would mean the example (or a real one) slipped into the kustomization.
			t.Fatalf("%s renders an unexpected %s %q", dir, r.GetKind(), r.GetName())
		}
		if err := yaml.UnmarshalStrict(b, target); err != nil {
			t.Fatalf("%s: %s %q does not decode strictly: %v", dir, r.GetKind(), r.GetName(), err)
		}
	}
	for name, missing := range map[string]bool{
		"Deployment": out.deployment == nil, "Service": out.service == nil,
		"ServiceAccount": out.serviceAccount == nil, "ConfigMap": out.configMap == nil,
		"PodDisruptionBudget": out.pdb == nil, "NetworkPolicy": out.networkPolicy == nil,
		"ServiceMonitor": out.serviceMonitor == nil, "PrometheusRule": withRules && out.prometheusRule == nil,
	} {
		if missing {
			t.Errorf("%s renders no %s", dir, name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// setOnce allocates *p and returns it, failing when the kind appeared before.
func setOnce[T any](t *testing.T, p **T) *T {
	t.Helper()
	if *p != nil {
		t.Fatalf("two objects of type %T rendered", *p)
	}
	*p = new(T)
	return *p
}

func TestKustomize_Render(t *testing.T) {
	cases := []struct {
		dir        string
		production bool
	}{
		{dir: "deploy/k8s"},
		{dir: "deploy/k8s/base"},
		{dir: "deploy/k8s/overlays/production", production: true},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			r := render(t, tc.dir)
			checkDeployment(t, r, tc.production)
			checkConfigMap(t, r.configMap)
			checkNetworking(t, r)
			checkServiceMonitor(t, r)
			checkRules(t, r.prometheusRule)
			if r.serviceAccount.AutomountServiceAccountToken == nil || *r.serviceAccount.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount: automountServiceAccountToken must be false")
			}
			if tc.production && r.deployment.Namespace == "" {
				t.Errorf("production overlay sets no namespace")
			}
			if !tc.production {
				for _, ns := range []string{r.deployment.Namespace, r.configMap.Namespace, r.service.Namespace} {
					if ns != "" {
						t.Errorf("base must be namespace-agnostic, found namespace %q", ns)
					}
				}
			}
		})
	}
}

func checkDeployment(t *testing.T, r rendered, production bool) {
	t.Helper()
	d := r.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("Deployment: replicas = %v, want 2 (leader + standby)", d.Spec.Replicas)
	}
	ru := d.Spec.Strategy.RollingUpdate
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxUnavailable == nil || ru.MaxUnavailable.String() != "0" || ru.MaxSurge == nil || ru.MaxSurge.String() != "1" {
		t.Errorf("Deployment: strategy must be RollingUpdate maxUnavailable 0 / maxSurge 1, got %+v", d.Spec.Strategy)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment: selector %v does not select its own pods %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}

	pod := d.Spec.Template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("pod: automountServiceAccountToken must be false")
	}
	if pod.ServiceAccountName != r.serviceAccount.Name {
		t.Errorf("pod: serviceAccountName %q, rendered ServiceAccount %q", pod.ServiceAccountName, r.serviceAccount.Name)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds != 30 {
		t.Errorf("pod: terminationGracePeriodSeconds = %v, want 30", pod.TerminationGracePeriodSeconds)
	}
	psc := pod.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod: securityContext must run as non-root with seccomp RuntimeDefault, got %+v", psc)
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("pod: want exactly one container, got %d (+%d init)", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]

	if want := componentImage(t); c.Image != want {
		t.Errorf("image %q, want %q: the tag is set in one place, deploy/k8s/components/image", c.Image, want)
	}
	if c.ImagePullPolicy == corev1.PullAlways {
		t.Errorf("imagePullPolicy Always defeats a pinned tag's point")
	}
	if !strings.Contains(c.Image, "/") {
		t.Errorf("image %q was not rewritten to a registry name by kustomize", c.Image)
	}

	// Probes.
	probe := func(name string, p *corev1.Probe, wantPath string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an HTTP probe on %s", name, wantPath)
			return
		}
		if p.HTTPGet.Path != wantPath || p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s: probes %s on port %s, want %s on http", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath)
		}
	}
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("livenessProbe", c.LivenessProbe, "/healthz")
	probe("startupProbe", c.StartupProbe, "/healthz")
	if sp := c.StartupProbe; sp != nil && sp.FailureThreshold*max(sp.PeriodSeconds, 10) < 600 {
		t.Errorf("startupProbe allows only %ds; an initial snapshot needs about 10 minutes", sp.FailureThreshold*sp.PeriodSeconds)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("container ports = %+v, want http 8080", c.Ports)
	}

	// Container security.
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("container: no securityContext")
	default:
		if !isTrue(sc.RunAsNonRoot) || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
			t.Errorf("container: must run as non-root user 65532, got runAsNonRoot=%v runAsUser=%v", sc.RunAsNonRoot, sc.RunAsUser)
		}
		if !isTrue(sc.ReadOnlyRootFilesystem) {
			t.Errorf("container: readOnlyRootFilesystem must be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container: allowPrivilegeEscalation must be false")
		}
		if isTrue(sc.Privileged) {
			t.Errorf("container: must not be privileged")
		}
		if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
			t.Errorf("container: capabilities must drop ALL and add none, got %+v", sc.Capabilities)
		}
	}

	// Resources.
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok || limit.IsZero() {
		t.Errorf("container: no memory limit")
	} else if req, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok || req.Cmp(limit) > 0 {
		t.Errorf("container: memory request %v must be set and not above the limit %v", req.String(), limit.String())
	} else if limit.Cmp(resource.MustParse("64Mi")) < 0 || limit.Cmp(resource.MustParse("1Gi")) > 0 {
		t.Errorf("container: memory limit %v is outside the sane range 64Mi..1Gi", limit.String())
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		// GOMEMLIMIT takes KiB/MiB/GiB; a Quantity takes Ki/Mi/Gi.
		soft, err := resource.ParseQuantity(strings.Replace(e.Value, "iB", "i", 1))
		if err != nil || !ok || soft.Cmp(limit) >= 0 {
			t.Errorf("GOMEMLIMIT=%q must be below the memory limit %v (%v)", e.Value, limit.String(), err)
		}
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Errorf("container: no CPU request")
	}

	// Environment: secrets only by reference.
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != r.configMap.Name {
		t.Errorf("container: envFrom must reference the rendered ConfigMap %q, got %+v", r.configMap.Name, c.EnvFrom)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
		if looksSecret(e.Name) && e.Value != "" {
			t.Errorf("env %s has a literal value; secrets must come from a secretKeyRef", e.Name)
		}
		if strings.HasPrefix(e.Name, "EDGESYNC_") && !slices.Contains(settings, e.Name) {
			t.Errorf("env %s is not a known edgesync setting", e.Name)
		}
	}
	for _, name := range secretSettings {
		e, ok := env[name]
		if !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "edgesync-secrets" {
			t.Errorf("env %s must be a secretKeyRef to edgesync-secrets, got %+v", name, e)
			continue
		}
		if required := slices.Contains(requiredSecrets, name); required == isTrue(e.ValueFrom.SecretKeyRef.Optional) {
			t.Errorf("env %s: secretKeyRef optional=%v, want %v (only %v are required)", name, isTrue(e.ValueFrom.SecretKeyRef.Optional), !required, requiredSecrets)
		}
		if !slices.Contains(exampleSecretKeys(t), e.ValueFrom.SecretKeyRef.Key) {
			t.Errorf("env %s uses key %q, which the example Secret does not document", name, e.ValueFrom.SecretKeyRef.Key)
		}
	}

	// Volumes: /tmp and EDGESYNC_DATA_DIR writable, secret files read-only at the paths the
	// ConfigMap names.
	dataDir := r.configMap.Data["EDGESYNC_DATA_DIR"]
	var dataVol *corev1.Volume
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	files := map[string]bool{} // absolute paths of mounted secret files
	for _, v := range pod.Volumes {
		m, ok := mounts[v.Name]
		if !ok {
			t.Errorf("volume %s is not mounted", v.Name)
			continue
		}
		switch {
		case v.EmptyDir != nil:
			switch m.MountPath {
			case "/tmp":
			case dataDir:
				dataVol = &v
			default:
				t.Errorf("emptyDir %s mounted at %s; the writable paths are /tmp and EDGESYNC_DATA_DIR (%s)", v.Name, m.MountPath, dataDir)
			}
		case v.Secret != nil:
			if v.Secret.SecretName != "edgesync-secrets" || !m.ReadOnly {
				t.Errorf("secret volume %s must come from edgesync-secrets and be mounted read-only", v.Name)
			}
			if !isTrue(v.Secret.Optional) {
				t.Errorf("secret volume %s serves an optional feature (NATS credentials, ICP identity) and must be optional", v.Name)
			}
			for _, it := range v.Secret.Items {
				if !slices.Contains(exampleSecretKeys(t), it.Key) {
					t.Errorf("secret volume %s uses key %q, which the example Secret does not document", v.Name, it.Key)
				}
				files[path.Join(m.MountPath, it.Path)] = true
			}
		default:
			t.Errorf("volume %s: only emptyDir and secret volumes are expected", v.Name)
		}
	}
	if _, ok := mounts["tmp"]; !ok {
		t.Errorf("no emptyDir mounted at /tmp")
	}
	// The ICP spool (EDGESYNC_DATA_DIR/spool) holds up to one asset per mirror worker.
	assetMax := defaultAssetMaxBytes
	if v := r.configMap.Data["EDGESYNC_ASSET_MAX_BYTES"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Errorf("EDGESYNC_ASSET_MAX_BYTES=%q is not a number", v)
		}
		assetMax = n
	}
	need := resource.NewQuantity(mirrorWorkers*assetMax, resource.BinarySI)
	switch {
	case dataVol == nil:
		t.Errorf("no emptyDir mounted at EDGESYNC_DATA_DIR=%q (the ICP spool)", dataDir)
	case dataVol.EmptyDir.Medium != "":
		t.Errorf("the data volume must be on disk, not %q: a spooled asset would count against the memory limit", dataVol.EmptyDir.Medium)
	case dataVol.EmptyDir.SizeLimit == nil || dataVol.EmptyDir.SizeLimit.Cmp(*need) < 0:
		t.Errorf("the data volume's sizeLimit %v is below %d workers x EDGESYNC_ASSET_MAX_BYTES (%d) = %v",
			dataVol.EmptyDir.SizeLimit, mirrorWorkers, assetMax, need)
	}
	if eph, ok := c.Resources.Requests[corev1.ResourceEphemeralStorage]; !ok || dataVol == nil || dataVol.EmptyDir.SizeLimit == nil || eph.Cmp(*dataVol.EmptyDir.SizeLimit) < 0 {
		t.Errorf("container: ephemeral-storage request %v must cover the data volume's sizeLimit, so the scheduler picks a node with the room", eph.String())
	}
	for _, key := range []string{"EDGESYNC_NATS_CREDS", "EDGESYNC_ICP_IDENTITY_FILE"} {
		if p := r.configMap.Data[key]; p != "" && !files[p] {
			t.Errorf("%s=%q is not a mounted secret file (mounted: %v)", key, p, keys(files))
		}
	}
}

func checkConfigMap(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	if !strings.HasPrefix(cm.Name, "edgesync-config") {
		t.Errorf("ConfigMap name %q, want edgesync-config(-hash)", cm.Name)
	}
	credentialsInURL := regexp.MustCompile(`://[^/@\s]+:[^/@\s]+@`)
	for k, v := range cm.Data {
		if !slices.Contains(settings, k) {
			t.Errorf("ConfigMap key %s is not a known edgesync setting", k)
		}
		if slices.Contains(secretSettings, k) || looksSecret(k) {
			t.Errorf("ConfigMap holds %s; secrets belong in the Secret", k)
		}
		if credentialsInURL.MatchString(v) {
			t.Errorf("ConfigMap %s=%q carries credentials", k, v)
		}
	}
	for k, want := range map[string]string{"EDGESYNC_HTTP_ADDR": ":8080", "EDGESYNC_LOG_FORMAT": "json"} {
		if got := cm.Data[k]; got != want {
			t.Errorf("ConfigMap %s = %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"EDGESYNC_NATS_URL", "EDGESYNC_SLOT", "EDGESYNC_PUBLICATION", "EDGESYNC_STREAM",
		"EDGESYNC_SUBJECT_PREFIX", "EDGESYNC_RECONCILE_INTERVAL", "EDGESYNC_STUCK_AFTER", "EDGESYNC_LOG_LEVEL"} {
		if cm.Data[k] == "" {
			t.Errorf("ConfigMap: %s must be set", k)
		}
	}
	if _, ok := cm.Data["EDGESYNC_BLOB_URL"]; !ok {
		t.Errorf("ConfigMap: EDGESYNC_BLOB_URL is missing (the blob health check and its alert never run without it)")
	}
	if cm.Data["EDGESYNC_STREAM_REPLICAS"] != "3" || cm.Data["EDGESYNC_STREAM_MAX_BYTES"] == "" || cm.Data["EDGESYNC_STREAM_MAX_BYTES"] == "0" {
		t.Errorf("ConfigMap: the stream the daemon creates must be R3 with a size limit, got replicas %q max bytes %q",
			cm.Data["EDGESYNC_STREAM_REPLICAS"], cm.Data["EDGESYNC_STREAM_MAX_BYTES"])
	}
	if cm.Data["EDGESYNC_ICP_FETCH_ROOT_KEY"] == "true" {
		t.Errorf("ConfigMap: EDGESYNC_ICP_FETCH_ROOT_KEY=true is for local replicas only")
	}
}

func checkNetworking(t *testing.T, r rendered) {
	t.Helper()
	pods := labels.Set(r.deployment.Spec.Template.Labels)
	if s := r.service.Spec.Selector; len(s) == 0 || !labels.SelectorFromSet(s).Matches(pods) {
		t.Errorf("Service selector %v does not select the pods %v", s, pods)
	}
	if p := r.service.Spec.Ports; len(p) != 1 || p[0].Name != "http" || p[0].Port != 8080 || p[0].TargetPort.String() != "http" {
		t.Errorf("Service ports = %+v, want http 8080 -> http", p)
	}
	if r.pdb.Spec.MinAvailable == nil || r.pdb.Spec.MinAvailable.String() != "1" || r.pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PodDisruptionBudget: want minAvailable 1")
	}
	if sel, err := metav1.LabelSelectorAsSelector(r.pdb.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(pods) {
		t.Errorf("PodDisruptionBudget selector does not select the pods (%v)", err)
	}

	np := r.networkPolicy.Spec
	if sel, err := metav1.LabelSelectorAsSelector(&np.PodSelector); err != nil || sel.Empty() || !sel.Matches(pods) {
		t.Errorf("NetworkPolicy podSelector does not select the pods (%v)", err)
	}
	if !slices.Contains(np.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("NetworkPolicy must restrict both ingress and egress, got %v", np.PolicyTypes)
	}
	for _, in := range np.Ingress {
		if len(in.From) == 0 {
			t.Errorf("NetworkPolicy: an ingress rule without peers allows everyone")
		}
		if len(in.Ports) == 0 {
			t.Errorf("NetworkPolicy: an ingress rule without ports opens every port")
		}
		for _, p := range in.Ports {
			if p.Port == nil || p.Port.IntValue() != 8080 {
				t.Errorf("NetworkPolicy: ingress must be on 8080 only, found %v", p.Port)
			}
		}
	}
	var egress []string
	for _, e := range np.Egress {
		if len(e.Ports) == 0 {
			t.Errorf("NetworkPolicy: an egress rule without ports opens every port")
		}
		for _, p := range e.Ports {
			egress = append(egress, fmt.Sprintf("%s/%s", p.Port.String(), protocol(p.Protocol)))
		}
	}
	sort.Strings(egress)
	want := []string{"4222/TCP", "443/TCP", "53/TCP", "53/UDP", "5432/TCP"}
	if !slices.Equal(egress, want) {
		t.Errorf("NetworkPolicy egress ports = %v, want %v", egress, want)
	}
}

func checkServiceMonitor(t *testing.T, r rendered) {
	t.Helper()
	sm := r.serviceMonitor
	if sm.APIVersion != "monitoring.coreos.com/v1" {
		t.Errorf("ServiceMonitor apiVersion %q", sm.APIVersion)
	}
	if sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector); err != nil || sel.Empty() || !sel.Matches(labels.Set(r.service.Labels)) {
		t.Errorf("ServiceMonitor selector does not select the Service (labels %v)", r.service.Labels)
	}
	if e := sm.Spec.Endpoints; len(e) != 1 || e[0].Port != "http" || e[0].Path != "/metrics" || e[0].Interval != "15s" {
		t.Errorf("ServiceMonitor endpoints = %+v, want port http path /metrics every 15s", e)
	} else if rl := e[0].Relabelings; len(rl) != 1 || rl[0].TargetLabel != "pipeline" ||
		!slices.Equal(rl[0].SourceLabels, []string{"__meta_kubernetes_pod_label_app_kubernetes_io_instance"}) {
		t.Errorf("ServiceMonitor must copy the pods' instance label to `pipeline` (the alerts aggregate by it), got %+v", rl)
	}
	if sm.Spec.JobLabel != "app.kubernetes.io/part-of" || r.service.Labels["app.kubernetes.io/part-of"] != "edgesync" {
		t.Errorf("ServiceMonitor jobLabel %q: every pipeline's job must be edgesync (alerts select up{job=\"edgesync\"})", sm.Spec.JobLabel)
	}
}

func checkRules(t *testing.T, pr *PrometheusRule) {
	t.Helper()
	if pr.APIVersion != "monitoring.coreos.com/v1" {
		t.Errorf("PrometheusRule apiVersion %q", pr.APIVersion)
	}
	anchors := runbookAnchors(t)
	seen := map[string]bool{}
	n := 0
	for _, g := range pr.Spec.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Alert == "" {
				t.Errorf("group %s: rule %q is not an alert", g.Name, rule.Expr)
				continue
			}
			if seen[rule.Alert] {
				t.Errorf("alert %s defined twice", rule.Alert)
			}
			seen[rule.Alert] = true
			if sev := rule.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", rule.Alert, sev)
			}
			if rule.Annotations["summary"] == "" {
				t.Errorf("alert %s: no summary", rule.Alert)
			}
			u := rule.Annotations["runbook_url"]
			anchor, ok := strings.CutPrefix(u, runbookURLPrefix)
			if !ok || anchor == "" {
				t.Errorf("alert %s: runbook_url %q does not start with %s", rule.Alert, u, runbookURLPrefix)
			} else if section, ok := anchors[anchor]; !ok {
				t.Errorf("alert %s: docs/runbook.md has no heading for #%s", rule.Alert, anchor)
			} else if !strings.Contains(section, rule.Alert) {
				t.Errorf("alert %s: runbook section #%s does not name the alert", rule.Alert, anchor)
			}
			if err := checkPromQL(rule.Expr); err != nil {
				t.Errorf("alert %s: %v", rule.Alert, err)
			}
			// Two pipelines in one namespace must alert separately.
			for _, m := range aggregation.FindAllStringSubmatch(rule.Expr, -1) {
				// A pod belongs to one pipeline, so per-pod clauses do not merge them.
				if strings.Contains(m[2], "namespace") && !strings.Contains(m[2], "pipeline") && !strings.Contains(m[2], "pod") {
					t.Errorf("alert %s: %s (%s) merges pipelines; add pipeline", rule.Alert, m[1], m[2])
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d alerts", n)
	}
	for _, want := range []string{"EdgesyncSlotLagHigh", "EdgesyncSlotLagCritical", "EdgesyncSlotLost",
		"EdgesyncNoLeader", "EdgesyncTwoLeaders", "EdgesyncPublishErrors", "EdgesyncSyncFailed",
		"EdgesyncSyncBacklogGrowing", "EdgesyncReconcileFailing", "EdgesyncReconcileFindingDrift",
		"EdgesyncICPUploadFailures", "EdgesyncBackendDown"} {
		if !seen[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "deploy/grafana/edgesync-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string            `json:"title"`
		UID    string            `json:"uid"`
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard needs a title, a uid and panels")
	}
	var doc any
	_ = json.Unmarshal(b, &doc)
	var exprs []string
	walkJSON(doc, func(key string, v any) {
		if s, ok := v.(string); ok && key == "expr" {
			exprs = append(exprs, s)
		}
	})
	if len(exprs) < 15 {
		t.Errorf("dashboard has only %d queries", len(exprs))
	}
	used := map[string]bool{}
	for _, e := range exprs {
		if err := checkPromQL(e); err != nil {
			t.Errorf("dashboard query %q: %v", e, err)
		}
		names, _, _ := parsePromQL(e)
		for _, n := range names {
			used[n] = true
		}
	}
	// Anything else that looks like one of our metrics (template variables, links) must be known too.
	for _, m := range regexp.MustCompile(`edgesync_[a-z0-9_]+`).FindAllString(string(b), -1) {
		if _, ok := metricLabels[m]; !ok {
			t.Errorf("dashboard mentions unknown metric %s", m)
		}
	}
	// The storage overview and the alerting signals are all on the board.
	for _, want := range []string{"edgesync_memories", "edgesync_edges", "edgesync_edges_bytes", "edgesync_sync_edges",
		"edgesync_cdc_slot_lag_bytes", "edgesync_leader", "edgesync_publish_errors_total", "edgesync_backend_up",
		"edgesync_reconcile_runs_total", "edgesync_reconcile_found_total", "edgesync_icp_upload_bytes_total",
		"edgesync_icp_upload_failures_total", "edgesync_cdc_events_total", "edgesync_reconcile_duration_seconds_bucket"} {
		if !used[want] {
			t.Errorf("dashboard does not show %s", want)
		}
	}
}

// aggregation finds `by (...)` and `on (...)` clauses.
var aggregation = regexp.MustCompile(`\b(by|on) \(([^)]*)\)`)

// componentImage is the image name:tag of deploy/k8s/components/image, the one place it is set.
func componentImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/k8s/components/image/kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Kind   string `json:"kind"`
		Images []struct {
			Name, NewName, NewTag string
		} `json:"images"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Kind != "Component" || len(c.Images) != 1 || c.Images[0].Name != "edgesync" || c.Images[0].NewTag == "" || c.Images[0].NewTag == "latest" {
		t.Fatalf("components/image must be a Component rewriting `edgesync` to a pinned tag (not latest): %+v", c)
	}
	return c.Images[0].NewName + ":" + c.Images[0].NewTag
}

// TestImageTag_OnePlace: no manifest and no doc names a tag of the image; the component is the
// only place, and the Makefile's image target reads it from there.
func TestImageTag_OnePlace(t *testing.T) {
	img := componentImage(t)
	name, tag, _ := strings.Cut(img, ":")
	err := filepath.WalkDir(filepath.Join(root, "deploy/k8s"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, filepath.Join("components", "image", "kustomization.yaml")) {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), name+":") || strings.Contains(string(b), "newTag") || strings.Contains(string(b), ":latest") {
			t.Errorf("%s sets an image tag; set it only in deploy/k8s/components/image", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "deploy/k8s/components/image/kustomization.yaml") {
		t.Errorf("the Makefile's image target does not read the tag from the component")
	}
	if tag == "" {
		t.Errorf("no tag in %s", img)
	}
}

// TestPipelineB_DoesNotCollide renders production and the second pipeline side by side (one
// namespace) and checks that no object name is shared and that no selector of one selects the
// other's pods.
func TestPipelineB_DoesNotCollide(t *testing.T) {
	a := render(t, "deploy/k8s/overlays/production")
	b := renderOpt(t, "deploy/k8s/overlays/pipeline-b", false)
	checkDeployment(t, b, true)
	checkConfigMap(t, b.configMap)
	checkNetworking(t, b)
	checkServiceMonitor(t, b)
	if a.deployment.Namespace != b.deployment.Namespace {
		t.Fatalf("the check assumes one namespace, got %q and %q", a.deployment.Namespace, b.deployment.Namespace)
	}
	for kind, names := range map[string][2]string{
		"Deployment": {a.deployment.Name, b.deployment.Name}, "Service": {a.service.Name, b.service.Name},
		"ConfigMap": {a.configMap.Name, b.configMap.Name}, "PodDisruptionBudget": {a.pdb.Name, b.pdb.Name},
		"NetworkPolicy": {a.networkPolicy.Name, b.networkPolicy.Name}, "ServiceMonitor": {a.serviceMonitor.Name, b.serviceMonitor.Name},
		"ServiceAccount": {a.serviceAccount.Name, b.serviceAccount.Name},
	} {
		if names[0] == names[1] {
			t.Errorf("%s %q exists in both pipelines", kind, names[0])
		}
	}
	for _, pair := range [][2]rendered{{a, b}, {b, a}} {
		mine, other := pair[0], pair[1]
		otherPods := labels.Set(other.deployment.Spec.Template.Labels)
		selects := func(what string, sel *metav1.LabelSelector) {
			t.Helper()
			s, err := metav1.LabelSelectorAsSelector(sel)
			if err != nil || s.Matches(otherPods) {
				t.Errorf("%s of %s selects %s's pods (%v)", what, mine.deployment.Name, other.deployment.Name, err)
			}
		}
		selects("Deployment selector", mine.deployment.Spec.Selector)
		selects("Service selector", &metav1.LabelSelector{MatchLabels: mine.service.Spec.Selector})
		selects("PodDisruptionBudget", mine.pdb.Spec.Selector)
		selects("NetworkPolicy", &mine.networkPolicy.Spec.PodSelector)
		if s, _ := metav1.LabelSelectorAsSelector(&mine.serviceMonitor.Spec.Selector); s.Matches(labels.Set(other.service.Labels)) {
			t.Errorf("ServiceMonitor of %s scrapes %s's Service", mine.deployment.Name, other.deployment.Name)
		}
		for _, tsc := range mine.deployment.Spec.Template.Spec.TopologySpreadConstraints {
			selects("topologySpreadConstraint", tsc.LabelSelector)
		}
		if aff := mine.deployment.Spec.Template.Spec.Affinity; aff != nil && aff.PodAntiAffinity != nil {
			for _, w := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				selects("podAntiAffinity", w.PodAffinityTerm.LabelSelector)
			}
		}
	}
	// The NetworkPolicy still admits Prometheus and API clients (peers are not edgesync pods).
	for _, peer := range b.networkPolicy.Spec.Ingress[0].From {
		if peer.PodSelector != nil && peer.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "" {
			t.Errorf("pipeline-b's NetworkPolicy requires the instance label of its ingress peers: %v", peer.PodSelector.MatchLabels)
		}
	}
	ca, cb := a.configMap.Data, b.configMap.Data
	for _, k := range []string{"EDGESYNC_SLOT", "EDGESYNC_PUBLICATION"} {
		if ca[k] == cb[k] {
			t.Errorf("%s = %q in both pipelines: each needs its own", k, ca[k])
		}
	}
	if cb["EDGESYNC_TABLES"] == "" {
		t.Errorf("pipeline-b sets no EDGESYNC_TABLES")
	}
	if b.prometheusRule != nil {
		t.Errorf("pipeline-b renders its own PrometheusRule: its alerts would fire twice (production's rules aggregate by pipeline)")
	}
	if a.deployment.Spec.Template.Labels["app.kubernetes.io/instance"] == b.deployment.Spec.Template.Labels["app.kubernetes.io/instance"] {
		t.Errorf("the pods of both pipelines carry the same instance label, so alerts cannot tell them apart")
	}
}

func TestRunbook_Sections(t *testing.T) {
	anchors := runbookAnchors(t)
	for _, want := range []string{"troubleshooting-sync-issues", "rollback", "legacy-columns"} {
		if _, ok := anchors[want]; !ok {
			t.Errorf("docs/runbook.md has no section #%s", want)
		}
	}
	for _, doc := range []string{"docs/deploy.md", "docs/scaling.md", "docs/troubleshooting.md"} {
		if _, err := os.Stat(filepath.Join(root, doc)); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
	deployDoc, _ := os.ReadFile(filepath.Join(root, "docs/deploy.md"))
	for _, want := range []string{"kubectl kustomize deploy/k8s", "EDGESYNC_NATS_CREDS", "proposed extension", "wal_level"} {
		if !strings.Contains(string(deployDoc), want) {
			t.Errorf("docs/deploy.md does not mention %q", want)
		}
	}
}

func TestSecretExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "deploy/k8s/examples/secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(b, &s); err != nil {
		t.Fatalf("example Secret does not decode strictly: %v", err)
	}
	if s.Kind != "Secret" || s.Name != "edgesync-secrets" {
		t.Errorf("example is %s %q, want Secret edgesync-secrets", s.Kind, s.Name)
	}
	if len(s.Data) != 0 {
		t.Errorf("example Secret must not use base64 data (it hides what is in it); use stringData placeholders")
	}
	if len(s.StringData) == 0 {
		t.Fatalf("example Secret has no keys")
	}
	for k, v := range s.StringData {
		if !strings.HasPrefix(v, "CHANGE-ME") {
			t.Errorf("example Secret key %s must be a CHANGE-ME placeholder, got %q", k, v)
		}
		if strings.Contains(v, "-----BEGIN") || strings.Contains(v, "NKEY SEED") || strings.Contains(v, "SUA") {
			t.Errorf("example Secret key %s looks like real key material", k)
		}
	}
	// No kustomization may pull the example in.
	err = filepath.WalkDir(filepath.Join(root, "deploy/k8s"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "kustomization.yaml" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var k struct {
			Resources  []string `json:"resources"`
			Components []string `json:"components"`
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, r := range append(k.Resources, k.Components...) {
			if strings.Contains(r, "example") {
				t.Errorf("%s includes %s", p, r)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMigrateJob: the migration is a kustomize-managed Job named after the image tag, with the
// Deployment's image, so it can be re-applied (same release: unchanged; new release: a new Job).
func TestMigrateJob(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy/k8s/migrate"))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s/migrate: %v", err)
	}
	if len(m.Resources()) != 1 || m.Resources()[0].GetKind() != "Job" {
		t.Fatalf("deploy/k8s/migrate must render exactly one Job")
	}
	b, err := m.Resources()[0].AsYAML()
	if err != nil {
		t.Fatal(err)
	}
	var j batchv1.Job
	if err := yaml.UnmarshalStrict(b, &j); err != nil {
		t.Fatalf("migrate Job does not decode strictly: %v", err)
	}
	img := componentImage(t)
	_, tag, _ := strings.Cut(img, ":")
	if j.Name != "edgesync-migrate-"+tag || j.GenerateName != "" {
		t.Errorf("Job name %q, want edgesync-migrate-%s (kubectl apply refuses generateName)", j.Name, tag)
	}
	if j.Spec.TTLSecondsAfterFinished == nil || *j.Spec.TTLSecondsAfterFinished < 3600 {
		t.Errorf("Job ttlSecondsAfterFinished %v: keep it at least an hour for its logs", j.Spec.TTLSecondsAfterFinished)
	}
	if got := j.Spec.Template.Spec.Containers[0].Image; got != img {
		t.Errorf("Job image %q, want the Deployment's %q", got, img)
	}
	pod := j.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container")
	}
	c := pod.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "migrate" {
		t.Errorf("Job args %v, want migrate ...", c.Args)
	}
	for _, e := range c.Env {
		if looksSecret(e.Name) && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("Job env %s must be a secretKeyRef", e.Name)
		}
	}
	sc := c.SecurityContext
	if pod.SecurityContext == nil || !isTrue(pod.SecurityContext.RunAsNonRoot) || sc == nil ||
		!isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("Job must run non-root, read-only, without privilege escalation")
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Errorf("Job has no memory limit")
	}
}

func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a multi-stage build", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage FROM %q, want golang:1.26", build.from)
	}
	buildRun := strings.Join(build.all("RUN"), "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}"`,
		"-o /out/edgesync ./cmd/edgesync", "./cmd/icp-replica"} {
		if !strings.Contains(buildRun, want) {
			t.Errorf("build stage RUN does not contain %q", want)
		}
	}
	for _, arg := range []string{"VERSION", "COMMIT"} {
		if !slices.ContainsFunc(build.all("ARG"), func(a string) bool { return strings.HasPrefix(a, arg) }) {
			t.Errorf("build stage has no ARG %s", arg)
		}
	}
	if final.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %q, want gcr.io/distroless/static-debian12:nonroot", final.from)
	}
	if runs := final.all("RUN"); len(runs) != 0 {
		t.Errorf("final stage has RUN %q, but distroless has no shell", runs)
	}
	users := final.all("USER")
	if len(users) == 0 {
		t.Errorf("final stage sets no USER")
	} else if u := users[len(users)-1]; u != "65532:65532" {
		t.Errorf("final USER %q, want 65532:65532 (numeric, non-root)", u)
	}
	if e := final.all("ENTRYPOINT"); len(e) != 1 || e[0] != `["/edgesync"]` {
		t.Errorf("ENTRYPOINT = %q, want exec form [\"/edgesync\"]", e)
	}
	if c := final.all("CMD"); len(c) != 1 || c[0] != `["run"]` {
		t.Errorf("CMD = %q, want [\"run\"]", c)
	}
	if !slices.Contains(final.all("EXPOSE"), "8080") {
		t.Errorf("final stage does not EXPOSE 8080")
	}
	if !slices.ContainsFunc(final.all("COPY"), func(c string) bool { return strings.Contains(c, "/out/edgesync /edgesync") }) {
		t.Errorf("final stage does not copy the binary to /edgesync")
	}

	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	if !slices.Contains(lines, ".git") {
		t.Errorf(".dockerignore does not exclude .git")
	}
	for _, l := range lines {
		if l == "go.mod" || l == "go.sum" || strings.HasPrefix(l, "cmd") || l == "*.go" {
			t.Errorf(".dockerignore excludes %q, which the build needs", l)
		}
	}
}

// stage is one FROM section of a Dockerfile.
type stage struct {
	from         string
	instructions [][2]string // instruction (upper case), arguments
}

func (s stage) all(instr string) []string {
	var out []string
	for _, in := range s.instructions {
		if in[0] == instr {
			out = append(out, in[1])
		}
	}
	return out
}

// parseDockerfile splits a Dockerfile into stages, joining continued lines and resolving global
// ARG defaults in FROM (enough for the checks above; not a full parser).
func parseDockerfile(t *testing.T, file string) []stage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		stages  []stage
		globals = map[string]string{}
		cur     strings.Builder
		lines   []string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cur.WriteString(strings.TrimSuffix(l, `\`) + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		instr, args = strings.ToUpper(instr), strings.TrimSpace(args)
		switch {
		case instr == "FROM":
			fields := strings.Fields(args)
			var image string
			for _, f := range fields {
				if !strings.HasPrefix(f, "--") {
					image = f
					break
				}
			}
			image = os.Expand(image, func(k string) string { return globals[k] })
			stages = append(stages, stage{from: image})
		case len(stages) == 0 && instr == "ARG":
			k, v, _ := strings.Cut(args, "=")
			globals[k] = v
		case len(stages) > 0:
			s := &stages[len(stages)-1]
			s.instructions = append(s.instructions, [2]string{instr, args})
		}
	}
	return stages
}

// runbookAnchors maps each GitHub heading anchor of docs/runbook.md to the text of its section.
func runbookAnchors(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs/runbook.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]string{}
	var current string
	inFence := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
		}
		if !inFence && strings.HasPrefix(l, "#") {
			if title, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " "); ok {
				current = githubAnchor(title)
				anchors[current] = ""
				continue
			}
		}
		if current != "" {
			anchors[current] += l + "\n"
		}
	}
	return anchors
}

// githubAnchor is the id GitHub gives a Markdown heading: lower case, punctuation dropped,
// spaces turned into hyphens.
func githubAnchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(title)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func TestGithubAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"Slot lag high":                      "slot-lag-high",
		"Troubleshooting sync issues":        "troubleshooting-sync-issues",
		"Rollback (`edgesync migrate down`)": "rollback-edgesync-migrate-down",
		"ICP upload failures":                "icp-upload-failures",
	} {
		if got := githubAnchor(in); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", in, got, want)
		}
	}
}

// promqlKeywords are words in PromQL that are not metric names.
var promqlKeywords = []string{
	"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
	"count_values", "group", "limitk", "limit_ratio",
	"by", "without", "on", "ignoring", "group_left", "group_right",
	"and", "or", "unless", "bool", "offset", "inf", "nan",
}

// labelListKeywords are followed by a parenthesised list of label names.
var labelListKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// selector is one metric name and its label matchers in a PromQL expression.
type selector struct {
	name     string
	matchers [][3]string // label, operator, value
}

// parsePromQL finds the metric selectors of a PromQL expression with a small lexer: enough to
// tell metric names from functions, keywords, label lists, strings, numbers and durations.
func parsePromQL(expr string) ([]string, []selector, error) {
	var (
		sels  []selector
		names []string
	)
	s := expr
	i := 0
	peek := func() byte { // next non-space byte
		for j := i; j < len(s); j++ {
			if s[j] != ' ' && s[j] != '\t' && s[j] != '\n' {
				return s[j]
			}
		}
		return 0
	}
	skipSpace := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n') {
			i++
		}
	}
	readUntil := func(closing byte) (string, error) { // s[i] is the opening bracket
		start := i + 1
		inStr := byte(0)
		for j := start; j < len(s); j++ {
			switch c := s[j]; {
			case inStr != 0 && c == '\\':
				j++
			case inStr != 0 && c == inStr:
				inStr = 0
			case inStr != 0:
			case c == '"' || c == '\'' || c == '`':
				inStr = c
			case c == closing:
				i = j + 1
				return s[start:j], nil
			}
		}
		return "", fmt.Errorf("unclosed %q", s[i])
	}
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '[':
			if _, err := readUntil(']'); err != nil {
				return nil, nil, err
			}
		case c == '{':
			return nil, nil, fmt.Errorf("selector without a metric name at %q", s[i:])
		case c == '$': // Grafana variable outside a selector
			i++
			for i < len(s) && (isIdent(s[i]) || s[i] == '{' || s[i] == '}') {
				i++
			}
		case unicode.IsDigit(rune(c)) || c == '.':
			for i < len(s) && (isIdent(s[i]) || s[i] == '.' || s[i] == '+' && (s[i-1] == 'e' || s[i-1] == 'E')) {
				i++
			}
		case isIdent(c) || c == ':':
			start := i
			for i < len(s) && (isIdent(s[i]) || s[i] == ':') {
				i++
			}
			word := s[start:i]
			switch {
			case slices.Contains(labelListKeywords, word):
				skipSpace()
				if i < len(s) && s[i] == '(' {
					if _, err := readUntil(')'); err != nil {
						return nil, nil, err
					}
				}
			case slices.Contains(promqlKeywords, strings.ToLower(word)):
			case peek() == '(': // a function call
			default:
				sel := selector{name: word}
				skipSpace()
				if i < len(s) && s[i] == '{' {
					body, err := readUntil('}')
					if err != nil {
						return nil, nil, err
					}
					if sel.matchers, err = parseMatchers(body); err != nil {
						return nil, nil, fmt.Errorf("%s: %w", word, err)
					}
				}
				sels = append(sels, sel)
				names = append(names, word)
			}
		default:
			i++
		}
	}
	return names, sels, nil
}

var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$`)

func parseMatchers(body string) ([][3]string, error) {
	var out [][3]string
	for _, part := range strings.Split(body, ",") { // values here contain no commas
		if strings.TrimSpace(part) == "" {
			continue
		}
		m := matcherRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("cannot read label matcher %q", part)
		}
		out = append(out, [3]string{m[1], m[2], m[3]})
	}
	return out, nil
}

// checkPromQL reports metric names, labels and label values the daemon does not export.
func checkPromQL(expr string) error {
	_, sels, err := parsePromQL(expr)
	if err != nil {
		return err
	}
	if len(sels) == 0 {
		return fmt.Errorf("expression %q uses no metric", expr)
	}
	for _, sel := range sels {
		known, ok := metricLabels[sel.name]
		if !ok {
			return fmt.Errorf("unknown metric %s", sel.name)
		}
		for _, m := range sel.matchers {
			label, op, value := m[0], m[1], m[2]
			if !slices.Contains(known, label) && !slices.Contains(targetLabels, label) {
				return fmt.Errorf("%s has no label %s", sel.name, label)
			}
			allowed := labelValues[sel.name][label]
			if allowed == nil || strings.Contains(value, "$") {
				continue
			}
			var values []string
			switch op {
			case "=", "!=":
				values = []string{value}
			case "=~", "!~":
				if !regexp.MustCompile(`^[a-z0-9_|-]+$`).MatchString(value) {
					continue // not a simple alternation
				}
				values = strings.Split(value, "|")
			}
			for _, v := range values {
				if !slices.Contains(allowed, v) {
					return fmt.Errorf("%s{%s}: %q is not one of %v", sel.name, label, v, allowed)
				}
			}
		}
	}
	return nil
}

func TestCheckPromQL(t *testing.T) {
	good := []string{
		`sum by (namespace) (rate(edgesync_publish_errors_total[5m])) > 0`,
		`histogram_quantile(0.9, sum by (le) (rate(edgesync_reconcile_duration_seconds_bucket{namespace="$namespace"}[$__rate_interval])))`,
		`max(edgesync_sync_edges{state="migrating", backend="icp-canister"}) > 1e3 and on (namespace) sum(edgesync_leader) >= 1`,
		`absent(up{job="edgesync"} == 1)`,
		`min by (backend) (edgesync_backend_up{backend=~"postgres|nats"}) offset 5m == 0`,
	}
	for _, e := range good {
		if err := checkPromQL(e); err != nil {
			t.Errorf("checkPromQL(%q) = %v, want nil", e, err)
		}
	}
	bad := map[string]string{
		`rate(edgesync_publish_error_total[5m])`:            "unknown metric",
		`sum by (x) (edgesync_sync_edges{status="failed"})`: "no label",
		`edgesync_sync_edges{state="stuck"}`:                "not one of",
		`edgesync_backend_up{backend=~"postgres|neon"}`:     "not one of",
		`{__name__="edgesync_leader"}`:                      "without a metric name",
		`vector(1) > 0`:                                     "uses no metric",
	}
	for e, want := range bad {
		if err := checkPromQL(e); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkPromQL(%q) = %v, want an error containing %q", e, err, want)
		}
	}
}

// exampleSecretKeys are the keys documented by the example Secret.
func exampleSecretKeys(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy/k8s/examples/secret.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return keys(s.StringData)
}

func walkJSON(v any, fn func(key string, v any)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			fn(k, e)
			walkJSON(e, fn)
		}
	case []any:
		for _, e := range x {
			walkJSON(e, fn)
		}
	}
}

func looksSecret(name string) bool {
	n := strings.ToUpper(name)
	for _, w := range []string{"PASSWORD", "TOKEN", "SECRET", "DATABASE_URL", "PRIVATE_KEY"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isTrue(b *bool) bool { return b != nil && *b }

func protocol(p *corev1.Protocol) string {
	if p == nil {
		return string(corev1.ProtocolTCP)
	}
	return string(*p)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
