#!/usr/bin/env python3
"""Writes the Grafana dashboards in grafana/dashboards/ (run from anywhere):

    python3 grafana/generate.py           # (re)write the JSON files
    python3 grafana/generate.py --check   # exit 1 if the files differ from this script

Dashboards are code so that every panel is reviewed like code, every query is checked
(scripts/check-observability.sh parses each one with promtool, and the Prometheus
integration test runs each against live data), and no UI export noise lands in git.
Metric reference: docs/observability.md.
"""

import json
import sys
from pathlib import Path

# The uid of grafana/provisioning/datasources/prometheus.yml.
DATASOURCE = {"type": "prometheus", "uid": "chat-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"


class Board:
    """Lays panels out left to right, 24 columns wide, in rows."""

    def __init__(self, uid, title, description, instance_job=None):
        self.uid = uid
        self.title = title
        self.description = description
        self.instance_job = instance_job
        self.panels = []
        self.next_id = 1
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def _newline(self):
        if self.x:
            self.y += self.row_height
            self.x = 0
            self.row_height = 0

    def _place(self, w, h):
        if self.x + w > 24:
            self._newline()
        pos = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def _panel(self, kind, title, description, targets, unit, w, h, options, defaults=None):
        field = {"unit": unit}
        field.update(defaults or {})
        panel = {
            "type": kind,
            "id": self._id(),
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": self._place(w, h),
            "targets": [
                dict(
                    {
                        "refId": chr(ord("A") + i),
                        "datasource": DATASOURCE,
                        "expr": expr,
                        "legendFormat": legend,
                    },
                    **extra,
                )
                for i, (expr, legend, extra) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": field, "overrides": []},
            "options": options,
        }
        self.panels.append(panel)

    def graph(self, title, description, *queries, unit="short", w=8, h=8, stack=False):
        """A time series panel; each query is (expr, legend)."""
        custom = {"fillOpacity": 10, "showPoints": "never", "lineWidth": 1}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        self._panel(
            "timeseries",
            title,
            description,
            [(expr, legend, {"range": True}) for expr, legend in queries],
            unit,
            w,
            h,
            {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"},
            },
            {"custom": custom},
        )

    def stat(self, title, description, expr, legend="", unit="short", w=4, h=4, thresholds=None):
        """A single-value panel (last value)."""
        defaults = {}
        if thresholds:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"value": None, "color": thresholds[0]}]
                + [{"value": v, "color": c} for v, c in thresholds[1:]],
            }
            defaults["color"] = {"mode": "thresholds"}
        self._panel(
            "stat",
            title,
            description,
            [(expr, legend, {"instant": True})],
            unit,
            w,
            h,
            {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
                "justifyMode": "auto",
                "orientation": "auto",
            },
            defaults,
        )

    def table(self, title, description, expr, w=12, h=6):
        """An instant table of the series' labels (for info metrics)."""
        self._panel(
            "table",
            title,
            description,
            [(expr, "", {"instant": True, "format": "table"})],
            "short",
            w,
            h,
            {"showHeader": True, "cellHeight": "sm"},
        )

    def to_json(self):
        templating = []
        if self.instance_job:
            templating.append(
                {
                    "type": "query",
                    "name": "instance",
                    "label": "instance",
                    "datasource": DATASOURCE,
                    "query": f'label_values(up{{job="{self.instance_job}"}}, instance)',
                    "definition": f'label_values(up{{job="{self.instance_job}"}}, instance)',
                    "refresh": 2,
                    "sort": 7,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": ["All"], "value": ["$__all"], "selected": True},
                }
            )
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["chat"],
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "time": {"from": "now-1h", "to": "now"},
            "refresh": "30s",
            "schemaVersion": 39,
            "version": 1,
            "links": [
                {
                    "title": "Chat dashboards",
                    "type": "dashboards",
                    "icon": "external link",
                    "tooltip": "",
                    "tags": ["chat"],
                    "asDropdown": True,
                    "targetBlank": False,
                    "includeVars": False,
                    "keepTime": True,
                }
            ],
            "annotations": {"list": []},
            "templating": {"list": templating},
            "panels": self.panels,
        }


def process_rows(b, sel):
    """CPU, memory and build of a job's processes."""
    b.row("Process")
    b.graph(
        "CPU (process)",
        "cpu_usage_percent: CPU time of each process in percent of the cores it may use.",
        (f"cpu_usage_percent{sel}", "{{instance}}"),
        unit="percent",
        w=6,
    )
    b.graph(
        "Memory (process)",
        "memory_usage_percent: resident memory of each process in percent of the memory it may use.",
        (f"memory_usage_percent{sel}", "{{instance}}"),
        unit="percent",
        w=6,
    )
    b.graph(
        "CPU (host)",
        "host_cpu_usage_percent: the whole machine the process runs on.",
        (f"host_cpu_usage_percent{sel}", "{{instance}}"),
        unit="percent",
        w=6,
    )
    b.graph(
        "Memory (host)",
        "host_memory_usage_percent: the whole machine the process runs on.",
        (f"host_memory_usage_percent{sel}", "{{instance}}"),
        unit="percent",
        w=6,
    )
    b.table(
        "Builds",
        "build_info: the version and git commit each process runs.",
        f"build_info{sel}",
        w=24,
    )


def http_row(b, sel, w=12):
    b.graph(
        "HTTP requests",
        "http_requests_total by route template and status.",
        (
            f"sum by (method, endpoint, status) (rate(http_requests_total{sel}[{RATE}]))",
            "{{method}} {{endpoint}} {{status}}",
        ),
        unit="reqps",
        w=w,
    )
    b.graph(
        "HTTP latency p99",
        "99th percentile of http_request_duration_seconds by route template.",
        (
            f"histogram_quantile(0.99, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket{sel}[{RATE}])))",
            "{{endpoint}}",
        ),
        unit="s",
        w=w,
    )


def grpc_server_rows(b, sel):
    b.graph(
        "gRPC requests served",
        "grpc_server_requests_total by method and status code.",
        (
            f"sum by (method, code) (rate(grpc_server_requests_total{sel}[{RATE}]))",
            "{{method}} {{code}}",
        ),
        unit="reqps",
    )
    b.graph(
        "gRPC non-OK ratio",
        "Share of served calls that ended with a status other than OK (the ChatHighGrpcErrorRatio alert fires above 5%).",
        (
            f'sum(rate(grpc_server_requests_total{{code!="OK", {sel[1:-1]}}}[{RATE}])) / sum(rate(grpc_server_requests_total{sel}[{RATE}]))',
            "non-OK",
        ),
        unit="percentunit",
    )
    b.graph(
        "gRPC latency served",
        "p50 and p99 of grpc_server_request_duration_seconds by method, over every status code (the histogram also has a code label).",
        (
            f"histogram_quantile(0.99, sum by (method, le) (rate(grpc_server_request_duration_seconds_bucket{sel}[{RATE}])))",
            "p99 {{method}}",
        ),
        (
            f"histogram_quantile(0.5, sum by (method, le) (rate(grpc_server_request_duration_seconds_bucket{sel}[{RATE}])))",
            "p50 {{method}}",
        ),
        unit="s",
    )


def overview():
    b = Board(
        "chat-overview",
        "Chat: overview",
        "The whole chat at a glance: health, traffic, latency, errors and resources of every service.",
    )
    b.row("Health")
    b.stat(
        "Targets up",
        "up: scrape targets answering, per job.",
        'sum by (job) (up{job=~"gateway|history|presence|accounts"})',
        "{{job}}",
        w=6,
    )
    b.stat(
        "Alerts firing",
        "Alerts of prometheus/rules/alerts.yml firing now.",
        'count(ALERTS{alertstate="firing"}) or vector(0)',
        unit="short",
        w=3,
        thresholds=["green", (1, "red")],
    )
    b.stat(
        "WebSocket connections",
        "ws_connections_active summed over gateways.",
        'sum(ws_connections_active{job="gateway"})',
        w=4,
    )
    b.stat(
        "Online users",
        "chat_presence_online_users (max over presence replicas, which all report the global value).",
        "max(chat_presence_online_users)",
        w=4,
    )
    b.stat(
        "Messages in / s",
        "WebSocket text frames read from clients per second, all gateways.",
        f'sum(rate(ws_messages_total{{job="gateway", direction="in"}}[{RATE}]))',
        unit="reqps",
        w=4,
    )
    b.stat(
        "Redis down",
        "Gateways whose Redis fan-out is disconnected (chat_gateway_redis_connected == 0) and presence replicas whose Redis store is (chat_presence_redis_connected == 0).",
        'count(chat_gateway_redis_connected == 0 or chat_presence_redis_connected == 0) or vector(0)',
        w=3,
        thresholds=["green", (1, "red")],
    )
    b.row("Traffic and latency")
    b.graph(
        "WebSocket frames",
        "ws_messages_total: text frames in (from clients) and out (to clients) per second.",
        (f'sum by (direction) (rate(ws_messages_total{{job="gateway"}}[{RATE}]))', "{{direction}}"),
        unit="reqps",
    )
    b.graph(
        "Send-to-ack latency",
        "ws_message_latency_seconds: from reading a send frame to queuing its ack (includes the durable store).",
        (
            f'histogram_quantile(0.99, sum by (le) (rate(ws_message_latency_seconds_bucket{{job="gateway"}}[{RATE}])))',
            "p99",
        ),
        (
            f'histogram_quantile(0.5, sum by (le) (rate(ws_message_latency_seconds_bucket{{job="gateway"}}[{RATE}])))',
            "p50",
        ),
        unit="s",
    )
    b.graph(
        "Connections",
        "ws_connections_active per gateway.",
        ('ws_connections_active{job="gateway"}', "{{instance}}"),
        stack=True,
    )
    b.row("Errors")
    b.graph(
        "HTTP 5xx ratio",
        "job:http_requests_5xx:ratio_rate5m (alert above 5%).",
        ("job:http_requests_5xx:ratio_rate5m", "{{job}}"),
        unit="percentunit",
    )
    b.graph(
        "gRPC non-OK ratio",
        "Served (job:grpc_server_errors:ratio_rate5m) and called (job:grpc_client_errors:ratio_rate5m), alert above 5%.",
        ("job:grpc_server_errors:ratio_rate5m", "served by {{job}}"),
        ("job:grpc_client_errors:ratio_rate5m", "called by {{job}}"),
        unit="percentunit",
    )
    b.graph(
        "Slow consumers and gap fills",
        "Connections closed with 1013, and messages that fan-out missed and history filled in.",
        (
            f"sum(increase(chat_gateway_slow_consumer_disconnects_total[{RATE}]))",
            "slow-consumer disconnects",
        ),
        (f"sum(increase(chat_gateway_gap_filled_messages_total[{RATE}]))", "gap-filled messages"),
    )
    b.row("Resources")
    b.graph(
        "CPU (process)",
        "cpu_usage_percent of every process.",
        ('cpu_usage_percent{job=~"gateway|history|presence|accounts"}', "{{job}} {{instance}}"),
        unit="percent",
        w=12,
    )
    b.graph(
        "Memory (process)",
        "memory_usage_percent of every process.",
        ('memory_usage_percent{job=~"gateway|history|presence|accounts"}', "{{job}} {{instance}}"),
        unit="percent",
        w=12,
    )
    b.table(
        "Builds",
        "build_info of every process.",
        'count by (service, version, git_commit) (build_info{job=~"gateway|history|presence|accounts"})',
        w=24,
    )
    return b


def gateway():
    sel = '{job="gateway", instance=~"$instance"}'
    b = Board(
        "chat-gateway",
        "Chat: gateway",
        "WebSockets, HTTP, rooms, Redis fan-out and gRPC calls of the gateways.",
        instance_job="gateway",
    )
    b.row("WebSockets")
    b.graph(
        "Connections",
        "ws_connections_active (open now) and the rate of ws_connections_total (opened).",
        (f"sum(ws_connections_active{sel})", "open"),
        (f"sum(rate(ws_connections_total{sel}[{RATE}]))", "opened / s"),
    )
    b.graph(
        "Frames",
        "ws_messages_total: text frames read from (in) and written to (out) clients.",
        (f"sum by (direction) (rate(ws_messages_total{sel}[{RATE}]))", "{{direction}}"),
        unit="reqps",
    )
    b.graph(
        "Send-to-ack latency",
        "ws_message_latency_seconds: a send frame read to its ack queued, through the durable history append.",
        (
            f"histogram_quantile(0.99, sum by (le) (rate(ws_message_latency_seconds_bucket{sel}[{RATE}])))",
            "p99",
        ),
        (
            f"histogram_quantile(0.9, sum by (le) (rate(ws_message_latency_seconds_bucket{sel}[{RATE}])))",
            "p90",
        ),
        (
            f"histogram_quantile(0.5, sum by (le) (rate(ws_message_latency_seconds_bucket{sel}[{RATE}])))",
            "p50",
        ),
        unit="s",
    )
    b.graph(
        "Disconnects by reason",
        "chat_gateway_disconnects_total: how sessions end.",
        (f"sum by (reason) (rate(chat_gateway_disconnects_total{sel}[{RATE}]))", "{{reason}}"),
        unit="ops",
        stack=True,
    )
    b.graph(
        "Slow consumers",
        "chat_gateway_slow_consumer_disconnects_total: closed with 1013, outbound queue full (alert above 10 in 5 min).",
        (f"sum(increase(chat_gateway_slow_consumer_disconnects_total{sel}[{RATE}]))", "closed"),
    )
    b.graph(
        "Frames refused",
        "chat_gateway_rate_limited_frames_total (send rate limit) and chat_gateway_typing_throttled_total (typing more than once a second per room).",
        (f"sum(rate(chat_gateway_rate_limited_frames_total{sel}[{RATE}]))", "rate limited"),
        (f"sum(rate(chat_gateway_typing_throttled_total{sel}[{RATE}]))", "typing throttled"),
        unit="ops",
    )
    b.graph(
        "Upgrades refused",
        "chat_gateway_upgrades_refused_total: at_capacity (503, CHAT_MAX_CONNECTIONS reached: add gateways or raise it), origin (403, not in CHAT_ALLOWED_ORIGINS), shutting_down (503, draining).",
        (f"sum by (reason) (rate(chat_gateway_upgrades_refused_total{sel}[{RATE}]))", "{{reason}}"),
        unit="ops",
    )
    b.row("Tokens on live sockets")
    b.graph(
        "Token renewals",
        "chat_gateway_token_renewals_total: auth frames by result. ok: renewed; invalid/expired: a bad token (the socket keeps its old one); revoked: a token of an ended session; other_user: a token of someone else. A rise of expired usually means clients renewing too late (disconnects by token_expired follow).",
        (f"sum by (result) (rate(chat_gateway_token_renewals_total{sel}[{RATE}]))", "{{result}}"),
        unit="ops",
    )
    b.graph(
        "Revocations",
        "chat_gateway_revocations_received_total: ended sessions announced by accounts (log-out, password change, deletion, reused refresh token); their sockets close with 4003. chat_gateway_revocation_gaps_total: announcements possibly missed (lagged in-process receiver, Redis reconnect): those sockets stay open until their token expires.",
        (f"sum(rate(chat_gateway_revocations_received_total{sel}[{RATE}]))", "received"),
        (f"sum by (cause) (rate(chat_gateway_revocation_gaps_total{sel}[{RATE}]))", "gap: {{cause}}"),
        unit="ops",
    )
    b.graph(
        "Revoked sessions remembered",
        "chat_gateway_revoked_sessions: session ids whose tokens this gateway refuses (kept 15 min, the longest token lifetime; capped). chat_gateway_revoked_sessions_evicted_total: ids dropped at the cap before their 15 min (their tokens would be accepted again: raise the cap if this moves).",
        (f"sum by (instance) (chat_gateway_revoked_sessions{sel})", "{{instance}}"),
        (f"sum(rate(chat_gateway_revoked_sessions_evicted_total{sel}[{RATE}]))", "evicted/s"),
    )
    b.row("HTTP")
    http_row(b, sel)
    b.row("Rooms and delivery")
    b.graph(
        "Rooms and users",
        "chat_gateway_rooms_active (rooms with local members) and chat_gateway_online_users (distinct users connected).",
        (f"sum(chat_gateway_rooms_active{sel})", "rooms"),
        (f"sum(chat_gateway_online_users{sel})", "users"),
    )
    b.graph(
        "Gap fills",
        "chat_gateway_gap_fill_reads_total, chat_gateway_gap_filled_messages_total (missed by fan-out, delivered from history), chat_gateway_gap_fill_failures_total.",
        (f"sum(rate(chat_gateway_gap_fill_reads_total{sel}[{RATE}]))", "reads"),
        (f"sum(rate(chat_gateway_gap_filled_messages_total{sel}[{RATE}]))", "messages filled"),
        (f"sum(rate(chat_gateway_gap_fill_failures_total{sel}[{RATE}]))", "failures"),
        unit="ops",
    )
    b.graph(
        "Resyncs and catch-up",
        "chat_gateway_resyncs_total (fan-out may have lost events) and chat_gateway_catchup_messages_total (replayed to joins with since).",
        (f"sum(rate(chat_gateway_resyncs_total{sel}[{RATE}]))", "resyncs"),
        (f"sum(rate(chat_gateway_catchup_messages_total{sel}[{RATE}]))", "catch-up messages"),
        unit="ops",
    )
    b.graph(
        "Presence lease lapses",
        "chat_gateway_presence_lease_lapses_total: presence declared this gateway dead (heartbeats missing for a lease; its users announced offline) and the gateway reported its rooms again. One per presence outage longer than the lease.",
        (f"sum by (instance) (increase(chat_gateway_presence_lease_lapses_total{sel}[{RATE}]))", "{{instance}}"),
    )
    b.row("Redis fan-out")
    b.graph(
        "Connected",
        "chat_gateway_redis_connected: 1 while both Redis connections are up (alert when 0 for a minute).",
        (f"chat_gateway_redis_connected{sel}", "{{instance}}"),
        w=4,
    )
    b.graph(
        "Degraded (polling history)",
        "chat_gateway_redis_degraded: 1 while Redis does not answer the gateway's pings (a silent link); rooms then read history every second (alert ChatFanOutDegraded after 30 s).",
        (f"chat_gateway_redis_degraded{sel}", "{{instance}}"),
        w=4,
    )
    b.graph(
        "Published and received",
        "chat_gateway_redis_publishes_total by result, chat_gateway_redis_received_total.",
        (f"sum by (result) (rate(chat_gateway_redis_publishes_total{sel}[{RATE}]))", "published {{result}}"),
        (f"sum(rate(chat_gateway_redis_received_total{sel}[{RATE}]))", "received"),
        unit="ops",
        w=8,
    )
    b.graph(
        "Reconnects and lag",
        "chat_gateway_redis_reconnects_total (publisher and subscriber) and chat_gateway_redis_reader_lagged_total (events dropped by a slow reader; a subscriber reconnect and a lag both trigger a resync).",
        (f"sum(increase(chat_gateway_redis_reconnects_total{sel}[{RATE}]))", "reconnects"),
        (f"sum(increase(chat_gateway_redis_reader_lagged_total{sel}[{RATE}]))", "lagged events"),
        w=8,
    )
    b.row("gRPC calls to history, presence and accounts")
    b.graph(
        "Calls",
        "grpc_client_requests_total by service, method and status code.",
        (
            f"sum by (service, method, code) (rate(grpc_client_requests_total{sel}[{RATE}]))",
            "{{service}}/{{method}} {{code}}",
        ),
        unit="reqps",
        w=12,
    )
    b.graph(
        "Latency p99",
        "99th percentile of grpc_client_request_duration_seconds by method, as the gateway sees it: over every status code, and over the non-OK calls alone (timeouts show near the channel timeout).",
        (
            f"histogram_quantile(0.99, sum by (service, method, le) (rate(grpc_client_request_duration_seconds_bucket{sel}[{RATE}])))",
            "{{service}}/{{method}}",
        ),
        (
            f'histogram_quantile(0.99, sum by (service, method, le) (rate(grpc_client_request_duration_seconds_bucket{{code!="OK", {sel[1:-1]}}}[{RATE}])))',
            "{{service}}/{{method}} non-OK",
        ),
        unit="s",
        w=12,
    )
    process_rows(b, sel)
    return b


def history():
    sel = '{job="history", instance=~"$instance"}'
    b = Board(
        "chat-history",
        "Chat: history",
        "The history service: gRPC calls, the message store (embedded or MongoDB) and appends.",
        instance_job="history",
    )
    b.row("gRPC")
    grpc_server_rows(b, sel)
    b.row("Message store")
    b.graph(
        "Store latency p99",
        "chat_history_store_operation_duration_seconds by operation and backend (MongoDB majority writes, or the embedded group commit with its fsync).",
        (
            f"histogram_quantile(0.99, sum by (op, backend, le) (rate(chat_history_store_operation_duration_seconds_bucket{sel}[{RATE}])))",
            "p99 {{op}} ({{backend}})",
        ),
        (
            f"histogram_quantile(0.5, sum by (op, backend, le) (rate(chat_history_store_operation_duration_seconds_bucket{sel}[{RATE}])))",
            "p50 {{op}} ({{backend}})",
        ),
        unit="s",
    )
    b.graph(
        "Appends",
        "chat_history_appends_total by result: stored, duplicate (a resend), error.",
        (f"sum by (result) (rate(chat_history_appends_total{sel}[{RATE}]))", "{{result}}"),
        unit="ops",
        stack=True,
    )
    b.graph(
        "Store errors",
        "chat_history_store_errors_total by operation and kind.",
        (f"sum by (op, kind) (rate(chat_history_store_errors_total{sel}[{RATE}]))", "{{op}} {{kind}}"),
        unit="ops",
    )
    b.row("Metrics endpoint")
    http_row(b, sel)
    process_rows(b, sel)
    return b


def presence():
    sel = '{job="presence", instance=~"$instance"}'
    b = Board(
        "chat-presence",
        "Chat: presence",
        "The presence service: gRPC calls, its store (memory or Redis), leases and sweeps.",
        instance_job="presence",
    )
    b.row("Who is online")
    b.graph(
        "Online users",
        "chat_presence_online_users: users held by live gateways, once per gateway holding them (sampled every 10 s).",
        (f"max(chat_presence_online_users{sel})", "users"),
        w=12,
    )
    b.graph(
        "Gateways",
        "chat_presence_gateways: gateways with a live lease.",
        (f"max(chat_presence_gateways{sel})", "gateways"),
        w=12,
    )
    b.row("gRPC")
    grpc_server_rows(b, sel)
    b.row("Store, leases and sweeps")
    b.graph(
        "Store latency p99",
        "chat_presence_store_operation_duration_seconds by operation (each one Lua script on Redis).",
        (
            f"histogram_quantile(0.99, sum by (op, backend, le) (rate(chat_presence_store_operation_duration_seconds_bucket{sel}[{RATE}])))",
            "{{op}} ({{backend}})",
        ),
        unit="s",
    )
    b.graph(
        "Store errors",
        "chat_presence_store_errors_total by operation and kind.",
        (f"sum by (op, kind) (rate(chat_presence_store_errors_total{sel}[{RATE}]))", "{{op}} {{kind}}"),
        unit="ops",
    )
    b.graph(
        "Sweeps and expired exits",
        "chat_presence_sweeps_total and chat_presence_expired_exits_total (room memberships of dead gateways released, announced offline).",
        (f"sum(rate(chat_presence_sweeps_total{sel}[{RATE}]))", "sweeps / s"),
        (f"sum(increase(chat_presence_expired_exits_total{sel}[{RATE}]))", "expired exits"),
    )
    b.row("Redis store")
    b.graph(
        "Redis connected",
        "chat_presence_redis_connected: 1 while the store's Redis connection is up (Redis store only; alert when 0 for a minute).",
        (f"chat_presence_redis_connected{sel}", "{{instance}}"),
        w=12,
    )
    b.graph(
        "Redis reconnects",
        "chat_presence_redis_reconnects_total: reconnections of the store's Redis connection.",
        (f"sum by (instance) (increase(chat_presence_redis_reconnects_total{sel}[{RATE}]))", "{{instance}}"),
        w=12,
    )
    b.row("Metrics endpoint")
    http_row(b, sel)
    process_rows(b, sel)
    return b


# accounts' refusals that are a user's outcome, not a fault (prometheus/rules/recording.yml).
ACCOUNTS_USER_CODES = "OK|INVALID_ARGUMENT|ALREADY_EXISTS|UNAUTHENTICATED|RESOURCE_EXHAUSTED"


def accounts():
    sel = '{job="accounts", instance=~"$instance"}'
    inner = sel[1:-1]
    b = Board(
        "chat-accounts",
        "Chat: accounts",
        "The accounts service: sign-ups, log-ins and refreshes by result, password hashing, sessions, gRPC calls.",
        instance_job="accounts",
    )
    b.row("Sign-ups, log-ins, refreshes")
    b.graph(
        "Log-ins by result",
        "chat_accounts_logins_total: ok, invalid (unknown user or wrong password), throttled (refused by the throttle without hashing), unavailable (store down or hashing queue full).",
        (f"sum by (result) (rate(chat_accounts_logins_total{sel}[{RATE}]))", "{{result}}"),
        unit="ops",
        stack=True,
    )
    b.graph(
        "Sign-ups by result",
        "chat_accounts_signups_total: ok, rejected (invalid, weak password, name taken), throttled, unavailable.",
        (f"sum by (result) (rate(chat_accounts_signups_total{sel}[{RATE}]))", "{{result}}"),
        unit="ops",
        stack=True,
    )
    b.graph(
        "Refreshes by result",
        "chat_accounts_refreshes_total: ok, invalid, reused (a rotated refresh token after the grace: the session was ended; alert ChatAccountsRefreshTokenReuse), unavailable.",
        (f"sum by (result) (rate(chat_accounts_refreshes_total{sel}[{RATE}]))", "{{result}}"),
        unit="ops",
        stack=True,
    )
    b.graph(
        "Failed log-ins against the day's rate",
        "Failed log-ins (invalid or throttled) per second over 5 minutes, and 5 times their rate over the last day: ChatAccountsLoginFailureSpike fires while the first is above both the second and 1/s for 5 minutes (all replicas; the instance selector does not apply).",
        ('job:chat_accounts_login_failures:rate5m{job="accounts"}', "failed / s (5m)"),
        ('5 * job:chat_accounts_login_failures:rate1d{job="accounts"}', "5 x the day's rate"),
        unit="ops",
        w=12,
    )
    b.graph(
        "Refresh-token reuses",
        "Sessions ended because a rotated refresh token came back after the grace (any fires ChatAccountsRefreshTokenReuse).",
        (f'sum(increase(chat_accounts_refreshes_total{{result="reused", {inner}}}[{RATE}]))', "reused"),
        w=12,
    )
    b.row("Password hashing")
    b.graph(
        "Hash duration",
        "chat_accounts_password_hash_duration_seconds: one argon2id hash or verify on the hashing pool (not the wait before it), p50, p90 and p99 by op.",
        (
            f"histogram_quantile(0.99, sum by (op, le) (rate(chat_accounts_password_hash_duration_seconds_bucket{sel}[{RATE}])))",
            "p99 {{op}}",
        ),
        (
            f"histogram_quantile(0.9, sum by (op, le) (rate(chat_accounts_password_hash_duration_seconds_bucket{sel}[{RATE}])))",
            "p90 {{op}}",
        ),
        (
            f"histogram_quantile(0.5, sum by (op, le) (rate(chat_accounts_password_hash_duration_seconds_bucket{sel}[{RATE}])))",
            "p50 {{op}}",
        ),
        unit="s",
    )
    b.graph(
        "Hash queue depth",
        "chat_accounts_password_hash_queue_depth: hashes waiting for a pool thread, per replica. At CHAT_HASH_QUEUE (64) log-ins and sign-ups are refused unavailable; ChatAccountsHashQueueSaturated fires at 48 for 2 minutes.",
        (f"chat_accounts_password_hash_queue_depth{sel}", "{{instance}}"),
    )
    b.graph(
        "Active sessions",
        "chat_accounts_sessions_active: stored sessions, sampled after each purge of expired ones (every replica counts the whole store: max).",
        (f"max(chat_accounts_sessions_active{sel})", "sessions"),
    )
    b.row("gRPC")
    b.graph(
        "gRPC requests served",
        "grpc_server_requests_total by method and status code (UNAUTHENTICATED: wrong credentials or token; RESOURCE_EXHAUSTED: throttled).",
        (
            f"sum by (method, code) (rate(grpc_server_requests_total{sel}[{RATE}]))",
            "{{method}} {{code}}",
        ),
        unit="reqps",
    )
    b.graph(
        "gRPC fault ratio",
        "Share of served calls that ended in a fault, by method: any status but OK and the users' outcomes (invalid argument, already exists, unauthenticated, resource exhausted), as ChatHighGrpcErrorRatio counts it.",
        (
            f'sum by (method) (rate(grpc_server_requests_total{{code!~"{ACCOUNTS_USER_CODES}", {inner}}}[{RATE}])) / sum by (method) (rate(grpc_server_requests_total{sel}[{RATE}]))',
            "{{method}}",
        ),
        unit="percentunit",
    )
    b.graph(
        "gRPC latency served",
        "p50 and p99 of grpc_server_request_duration_seconds by method, over every status code (log-ins and sign-ups include their hash and its wait).",
        (
            f"histogram_quantile(0.99, sum by (method, le) (rate(grpc_server_request_duration_seconds_bucket{sel}[{RATE}])))",
            "p99 {{method}}",
        ),
        (
            f"histogram_quantile(0.5, sum by (method, le) (rate(grpc_server_request_duration_seconds_bucket{sel}[{RATE}])))",
            "p50 {{method}}",
        ),
        unit="s",
    )
    b.row("Metrics endpoint")
    http_row(b, sel)
    process_rows(b, sel)
    return b


def main():
    check = "--check" in sys.argv[1:]
    boards = {
        "overview.json": overview(),
        "gateway.json": gateway(),
        "history.json": history(),
        "presence.json": presence(),
        "accounts.json": accounts(),
    }
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, board in boards.items():
        text = json.dumps(board.to_json(), indent=2, ensure_ascii=False) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    if stale:
        print("out of date (run python3 grafana/generate.py):", *stale, sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
