// Command conveyor-metrics-adapter serves custom.metrics.k8s.io for pods from PromQL queries
// against the test Prometheus. It is a named stand-in for prometheus-adapter for the TEST
// environment only: prometheus-adapter cannot be fetched here; this adapter is built on the same
// upstream library (sigs.k8s.io/custom-metrics-apiserver) and does what one prometheus-adapter
// rule does: one metric name, one query returning a value per pod label.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/template"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"
	"k8s.io/metrics/pkg/apis/custom_metrics"

	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider/helpers"
)

// promProvider answers one pods metric by running a query whose result carries a "pod" label.
type promProvider struct {
	client  dynamic.Interface
	mapper  apimeta.RESTMapper
	promURL string
	metric  string
	query   *template.Template
	http    *http.Client
}

var podsResource = schema.GroupResource{Resource: "pods"}

func (p *promProvider) info() provider.CustomMetricInfo {
	return provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: p.metric}
}

// values runs the query for a namespace and returns each pod's value.
func (p *promProvider) values(ctx context.Context, namespace string) (map[string]float64, error) {
	var q strings.Builder
	if err := p.query.Execute(&q, map[string]string{"Namespace": namespace}); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		p.promURL+"/api/v1/query?query="+url.QueryEscape(q.String()), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("prometheus answer (HTTP %d): %w", resp.StatusCode, err)
	}
	if body.Status != "success" || body.Data.ResultType != "vector" {
		return nil, fmt.Errorf("prometheus query failed: %s %s", body.Status, body.Error)
	}
	out := map[string]float64{}
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || r.Metric["pod"] == "" {
			continue
		}
		out[r.Metric["pod"]] = v
	}
	return out, nil
}

func (p *promProvider) value(ctx context.Context, namespace, pod string, v float64, info provider.CustomMetricInfo) (custom_metrics.MetricValue, error) {
	ref, err := helpers.ReferenceFor(p.mapper, types.NamespacedName{Namespace: namespace, Name: pod}, info)
	if err != nil {
		return custom_metrics.MetricValue{}, err
	}
	return custom_metrics.MetricValue{
		DescribedObject: ref,
		Metric:          custom_metrics.MetricIdentifier{Name: info.Metric},
		Timestamp:       metav1.Time{Time: time.Now()},
		Value:           *resource.NewMilliQuantity(int64(v*1000), resource.DecimalSI),
	}, nil
}

func (p *promProvider) check(info provider.CustomMetricInfo) error {
	if info.GroupResource != podsResource || info.Metric != p.metric || !info.Namespaced {
		return provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	return nil
}

func (p *promProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValue, error) {
	if err := p.check(info); err != nil {
		return nil, err
	}
	vals, err := p.values(ctx, name.Namespace)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	v, ok := vals[name.Name]
	if !ok {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	mv, err := p.value(ctx, name.Namespace, name.Name, v, info)
	return &mv, err
}

func (p *promProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValueList, error) {
	if err := p.check(info); err != nil {
		return nil, err
	}
	names, err := helpers.ListObjectNames(p.mapper, p.client, namespace, selector, info)
	if err != nil {
		return nil, err
	}
	vals, err := p.values(ctx, namespace)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	list := &custom_metrics.MetricValueList{}
	for _, n := range names {
		v, ok := vals[n]
		if !ok {
			continue // no samples yet (a new pod); the HPA treats missing pods itself
		}
		mv, err := p.value(ctx, namespace, n, v, info)
		if err != nil {
			return nil, err
		}
		list.Items = append(list.Items, mv)
	}
	return list, nil
}

func (p *promProvider) ListAllMetrics() []provider.CustomMetricInfo {
	return []provider.CustomMetricInfo{p.info()}
}

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()
	cmd := &basecmd.AdapterBase{Name: "conveyor-metrics-adapter"}
	var promURL, metric, query string
	cmd.Flags().StringVar(&promURL, "prometheus-url", "http://127.0.0.1:9090", "Prometheus base URL")
	cmd.Flags().StringVar(&metric, "metric", "", "the pods metric name served")
	cmd.Flags().StringVar(&query, "query", "", "PromQL giving one value per pod label; {{.Namespace}} is replaced")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); err != nil {
		klog.Fatalf("unable to parse flags: %v", err)
	}
	if metric == "" || query == "" {
		klog.Fatal("--metric and --query are required")
	}
	tmpl, err := template.New("query").Parse(query)
	if err != nil {
		klog.Fatalf("bad --query: %v", err)
	}
	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("dynamic client: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("REST mapper: %v", err)
	}
	cmd.WithCustomMetrics(&promProvider{
		client: client, mapper: mapper, promURL: strings.TrimRight(promURL, "/"), metric: metric,
		query: tmpl, http: &http.Client{Timeout: 5 * time.Second},
	})
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("unable to run custom metrics adapter: %v", err)
	}
}
