#!/usr/bin/env bash
# Checks the operations artefacts: the Prometheus alerting rules (promtool check rules), their
# unit tests (promtool test rules), and the Grafana dashboard (structure, the PromQL of every
# panel parses, and every metric name it uses is one the exporter exports).
#
#   bash scripts/check-ops.sh            # from anywhere
#   PROMTOOL=/path/to/promtool bash scripts/check-ops.sh
#
# If promtool is not on PATH it is installed by scripts/install-prometheus.sh (Debian's
# `prometheus` package, without leaving a server running). Needs python3 (standard library
# only).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RULES=alerts/prefect-events-exporter.rules.yml
RULE_TESTS=alerts/prefect-events-exporter.rules.test.yml
DASHBOARD=dashboards/prefect-events-exporter.json

passed=0
failed=0
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT

check() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
    echo "PASS: $name"
  else
    failed=$((failed + 1))
    echo "FAIL: $name" >&2
  fi
}

# --- promtool ------------------------------------------------------------------------------

install_promtool() {
  bash scripts/install-prometheus.sh && command -v promtool >/dev/null 2>&1
}

find_promtool() {
  if [[ -n ${PROMTOOL:-} ]]; then
    [[ -x $PROMTOOL ]] || command -v "$PROMTOOL" >/dev/null 2>&1
    return
  fi
  if command -v promtool >/dev/null 2>&1 || install_promtool; then
    PROMTOOL=$(command -v promtool)
    # Captured, then cut: under pipefail, `| head -n 1` can fail the writer with SIGPIPE.
    local version
    version=$("$PROMTOOL" --version 2>&1 || true)
    echo "${version%%$'\n'*}"
    return 0
  fi
  return 1
}

# --- dashboard and coverage checks (python3, standard library) --------------------------------

cat >"$work/check_ops.py" <<'PY'
"""Structural checks of the dashboard and the alert rules; one check per subcommand."""
import json
import re
import sys

DASHBOARD = "dashboards/prefect-events-exporter.json"
RULES = "alerts/prefect-events-exporter.rules.yml"
RULE_TESTS = "alerts/prefect-events-exporter.rules.test.yml"

ALERTS = [
    "PrefectFlowRunStuckPending",
    "PrefectFlowRunStuckCancelling",
    "PrefectFlowRunsLate",
    "PrefectFlowRunFailureRatioHigh",
    "PrefectExporterDisconnected",
    "PrefectExporterEventDelayHigh",
    "PrefectExporterReconcileDrift",
    "PrefectExporterVerifyFailing",
]

# The exporter's metric names (a contract). Histograms only with their series suffixes.
PLAIN = set()
HISTOGRAMS = set()
for kind in ("flow_run", "task_run"):
    PLAIN |= {
        f"prefect_{kind}s",
        f"prefect_{kind}_state_entries_total",
        f"prefect_{kind}_transitions_total",
        f"prefect_{kind}_self_transitions_total",
        f"prefect_{kind}s_active",
        f"prefect_{kind}_oldest_state_age_seconds",
    }
    HISTOGRAMS.add(f"prefect_{kind}_state_duration_seconds")
PLAIN |= {
    "prefect_exporter_stream_connected",
    "prefect_exporter_stream_reconnects_total",
    "prefect_exporter_last_event_timestamp_seconds",
    "prefect_exporter_events_received_total",
    "prefect_exporter_events_duplicate_total",
    "prefect_exporter_events_rejected_total",
    "prefect_exporter_verify_windows_total",
    "prefect_exporter_events_repaired_total",
    "prefect_exporter_reconcile_corrections_total",
    "prefect_exporter_reconcile_last_drift",
    "prefect_exporter_reconciliations_total",
    "prefect_exporter_tracked_resources",
    "prefect_exporter_dedup_ids",
    "prefect_exporter_chain_gaps_total",
}
HISTOGRAMS.add("prefect_exporter_event_delay_seconds")
ALLOWED = PLAIN | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
TOKEN = re.compile(r"prefect_[a-z_]+")

errors = []


def err(msg):
    errors.append(msg)


def load():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(panels, parent=""):
    """Every panel, rows' nested (collapsed) panels included."""
    for p in panels:
        yield p
        if p.get("type") == "row":
            yield from all_panels(p.get("panels") or [], p.get("title", ""))


def name_of(p):
    return f"panel {p.get('id')!r} ({p.get('title')!r})"


def exprs(d):
    """(where, expr) of every panel target and every query variable."""
    for p in all_panels(d.get("panels", [])):
        for t in p.get("targets") or []:
            yield f"{name_of(p)} target {t.get('refId')!r}", t.get("expr", "")
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            if isinstance(q, dict):
                q = q.get("query", "")
            yield f"variable {v.get('name')!r}", q or ""


def check_json():
    d = load()
    if not isinstance(d, dict):
        err("the dashboard is not a JSON object")


def check_meta():
    d = load()
    if d.get("uid") != "prefect-events-exporter":
        err(f"uid is {d.get('uid')!r}, want 'prefect-events-exporter'")
    if d.get("title") != "Prefect flow runs (events exporter)":
        err(f"title is {d.get('title')!r}")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        err(f"schemaVersion {d.get('schemaVersion')!r} (want an int >= 36)")
    if not isinstance(d.get("panels"), list) or not d["panels"]:
        err("no panels")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        err("no 'datasource' template variable of type datasource for prometheus")
    for label in ("deployment", "work_pool"):
        v = variables.get(label)
        q = (v or {}).get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not v or v.get("type") != "query" or not re.fullmatch(
            r"label_values\(prefect_flow_run_state_entries_total(\{[^}]*\})?,\s*" + label + r"\)", q or ""
        ):
            err(f"no '{label}' variable from label_values(prefect_flow_run_state_entries_total, {label})")
    # Everything queries the chosen data source.
    for p in all_panels(d.get("panels", [])):
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            err(f"{name_of(p)}: datasource is not ${{datasource}}")
        for t in p.get("targets") or []:
            if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                err(f"{name_of(p)}: a target's datasource is not ${{datasource}}")


def check_panels():
    d = load()
    cells = {}
    for p in all_panels(d.get("panels", [])):
        if not isinstance(p.get("title"), str) or not p["title"].strip():
            err(f"{name_of(p)}: no title")
        if not isinstance(p.get("type"), str) or not p["type"]:
            err(f"{name_of(p)}: no type")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            err(f"{name_of(p)}: no gridPos")
        elif g["x"] + g["w"] > 24:
            err(f"{name_of(p)}: wider than the 24-column grid")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        err(f"{name_of(p)} overlaps {cells[(x, y)]}")
                        break
                    cells[(x, y)] = name_of(p)
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            err(f"{name_of(p)}: no targets")
            continue
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            err(f"{name_of(p)}: duplicate refIds {refs}")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                err(f"{name_of(p)}: a target without an expr")


def check_ids():
    d = load()
    seen = {}
    for p in all_panels(d.get("panels", [])):
        pid = p.get("id")
        if not isinstance(pid, int):
            err(f"{name_of(p)}: id is not an integer")
        elif pid in seen:
            err(f"duplicate panel id {pid}: {seen[pid]!r} and {p.get('title')!r}")
        else:
            seen[pid] = p.get("title")


def check_metrics():
    d = load()
    used = set()
    for where, e in exprs(d):
        tokens = TOKEN.findall(e)
        if not tokens:
            err(f"{where}: uses no prefect_ metric: {e!r}")
        for tok in tokens:
            used.add(tok)
            if tok not in ALLOWED:
                err(f"{where}: unknown metric {tok!r}")
    with open(RULES, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.lstrip().startswith("#"):
                continue
            for tok in TOKEN.findall(line):
                if tok not in ALLOWED:
                    err(f"{RULES}:{n}: unknown metric {tok!r}")
    if not errors:
        print(f"dashboard uses {len(used)} metric names, all known")


def substitute(expr):
    """A Grafana expr as plain PromQL: interval variables as 5m, others as .*."""
    def repl(m):
        name = m.group(1) or m.group(2)
        return "5m" if name.startswith("__") and name.endswith(("interval", "range")) else ".*"
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def promql_rules(out):
    """Every dashboard expr as a recording rule, for `promtool check rules` to parse."""
    d = load()
    rules = []
    for i, (where, e) in enumerate(exprs(d)):
        e = substitute(e)
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", e, re.S)
        if m:
            e = m.group(1)
        elif e.strip().startswith("label_values("):
            e = "vector(0)"  # label_values(label): nothing to parse
        rules.append({"record": f"dashboard:expr_{i}", "expr": e})
        print(f"  {where}")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}, f, indent=1)


def blocks(lines, start):
    """Split lines into blocks, each starting at a line matching `start`."""
    out, cur = [], None
    for line in lines:
        if re.match(start, line):
            cur = [line]
            out.append(cur)
        elif cur is not None:
            cur.append(line)
    return out


def check_coverage():
    with open(RULES, encoding="utf-8") as f:
        rules = f.read().splitlines()
    found = {}
    for b in blocks(rules, r"\s*- alert:"):
        name = b[0].split(":", 1)[1].strip()
        text = "\n".join(x for x in b if not x.lstrip().startswith("#"))
        found[name] = text
        if not re.search(r"^\s+severity: (warning|critical)\s*$", text, re.M):
            err(f"{name}: no severity label warning|critical")
        for ann in ("summary", "description"):
            if not re.search(rf"^\s+{ann}: \S", text, re.M):
                err(f"{name}: no {ann} annotation")
        if not re.search(r"^\s+for: \d+[smh]\s*$", text, re.M):
            err(f"{name}: no for: duration")
        if "{{" not in text:
            err(f"{name}: annotations use no template values")
    if sorted(found) != sorted(ALERTS):
        err(f"alerts are {sorted(found)}, want {sorted(ALERTS)}")
    if not re.search(r"^\s+- name: prefect-events-exporter\s*$", "\n".join(rules), re.M):
        err("no rule group named prefect-events-exporter")
    with open(RULE_TESTS, encoding="utf-8") as f:
        tests = f.read().splitlines()
    fires, quiet = {}, {}
    for b in blocks(tests, r"\s*- eval_time:"):
        text = "\n".join(b)
        m = re.search(r"^\s+alertname: (\w+)", text, re.M)
        if not m:
            continue
        name = m.group(1)
        if re.search(r"^\s+exp_alerts: \[\]\s*$", text, re.M):
            quiet[name] = quiet.get(name, 0) + 1
        elif re.search(r"^\s+- exp_labels:", text, re.M):
            fires[name] = fires.get(name, 0) + 1
    for name in ALERTS:
        if not fires.get(name):
            err(f"{RULE_TESTS}: no case where {name} fires")
        if not quiet.get(name):
            err(f"{RULE_TESTS}: no case where {name} does not fire")
    for name in set(fires) | set(quiet):
        if name not in ALERTS:
            err(f"{RULE_TESTS}: tests an unknown alert {name}")
    print(f"{len(found)} alerts, each with firing ({sum(fires.values())} cases) "
          f"and quiet ({sum(quiet.values())} cases) tests")


def main():
    cmd = sys.argv[1]
    try:
        if cmd == "promql-rules":
            promql_rules(sys.argv[2])
        else:
            {"json": check_json, "meta": check_meta, "panels": check_panels, "ids": check_ids,
             "metrics": check_metrics, "coverage": check_coverage}[cmd]()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        err(f"{type(e).__name__}: {e}")
    for e in errors:
        print(f"  error: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)


main()
PY

py() { python3 "$work/check_ops.py" "$@"; }

promql_parses() {
  py promql-rules "$work/dashboard-exprs.rules.json" && "$PROMTOOL" check rules "$work/dashboard-exprs.rules.json"
}

# --- run -----------------------------------------------------------------------------------

if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 is required" >&2
  echo "ops checks: 0 passed, 1 failed"
  exit 1
fi

PROMTOOL=${PROMTOOL:-}
have_promtool=""
if check "promtool available" find_promtool; then
  have_promtool=1
fi
if [[ -n $have_promtool ]]; then
  check "promtool check rules $RULES" "$PROMTOOL" check rules "$RULES"
  check "promtool test rules $RULE_TESTS" "$PROMTOOL" test rules "$RULE_TESTS"
else
  failed=$((failed + 2))
  echo "FAIL: promtool check rules / test rules (no promtool)" >&2
fi
check "alerts: names, labels, annotations, test coverage" py coverage
check "dashboard $DASHBOARD: valid JSON" py json
check "dashboard: uid, title, schema, template variables, datasource" py meta
check "dashboard: panels have title, type, gridPos, targets with expr" py panels
check "dashboard: unique panel ids" py ids
check "dashboard and rules: only the exporter's metric names" py metrics
if [[ -n $have_promtool ]]; then
  check "dashboard: every expr parses as PromQL (promtool)" promql_parses
else
  failed=$((failed + 1))
  echo "FAIL: dashboard PromQL parse (no promtool)" >&2
fi

echo "ops checks: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
