"""The Kubernetes deployment (k8s/) checked offline, as far as a machine without a cluster can:

- `kubectl kustomize` (kubectl from tests/k8s's npm packages) renders the base, each of its
  components (k8s/components/) on top of it, and the example, and every object validates
  against the Kubernetes and Prometheus Operator API schemas with unknown fields as errors
  (tests/k8s/validate.mjs); the validator is shown to reject an unknown field and a wrong type;
- the base has only built-in kinds (it installs without the Prometheus Operator's CRDs); a
  component adds its own objects and changes none of the base's, listed in an overlay or in
  the base's own kustomization (as Argo CD's kustomize.components does) alike; the scrape
  annotations, the PodMonitor and the ServiceMonitor all reach spindle's admin port, and the
  patch docs/deploy-kubernetes.md gives against double scrapes takes out only the annotations;
- the DaemonSet meets what a rollout and the node need (host network, NODE_IP, probes, the
  grace period above the configured drain, no hostPorts to block the surge Pod, ...);
- the example config in the ConfigMap passes `spindle --check-config`;
- the patch docs/deploy-kubernetes.md gives for upstream.source node renders, validates and
  takes out only hostPID, SYS_ADMIN and SYS_PTRACE; no Pod writes into kubelet's seccomp
  directory;
- spindle runs on a simulated node with exactly the DaemonSet's capabilities and arguments,
  under its seccomp profile (which spindle installs on itself: --seccomp-profile), in the host's PID
  namespace, with the ConfigMap's upstream.source pod: calls are served through it from the
  calling Pod's own address and counted by calling Pod; without each capability, with
  io_uring or setns taken out of the profile, or in a PID namespace of its own, it does not
  do its job; with upstream.source node and the documented patch's grants it serves from the
  node's address.

Run alone: /usr/bin/python3 tests/integration/run.py test_k8s
"""

import json
import os
import platform
import re
import shutil
import subprocess
import sys

import sim
from support import SimTestCase, grpcio_missing, metric, norm_ip

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
K8S = os.path.join(ROOT, "k8s")
VALIDATOR_DIR = os.path.join(ROOT, "tests", "k8s")
# kubectl (for its kustomize) from the npm packages make deps installs in tests/k8s: Debian 12
# has none recent enough (tests/k8s/extract-kubectl.py).
KUBECTL = os.path.join(VALIDATOR_DIR, "node_modules", ".bin", "kubectl")
DEPLOY_DOC = os.path.join(ROOT, "docs", "deploy-kubernetes.md")
GRPC_DIR = os.path.join(ROOT, "tests", "grpc")

PORT = 50051
VIP4 = "198.19.0.10"
ADMIN_PORT = 9901
COMPONENTS = os.path.join(K8S, "components")


def kustomize(path):
    p = subprocess.run([KUBECTL, "kustomize", path], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{p.stderr}")
    return p.stdout


def node(script, *args, stdin=""):
    return subprocess.run(["node", os.path.join(VALIDATOR_DIR, script), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=VALIDATOR_DIR)


def validate(text):
    """(exit code, output) of the validator on a multi-document YAML text."""
    p = node("validate.mjs", "-", stdin=text)
    return p.returncode, (p.stdout + p.stderr).strip()


def objects(text):
    p = node("to-json.mjs", "-", stdin=text)
    if p.returncode != 0:
        raise AssertionError(f"to-json.mjs failed: {p.stderr}")
    return json.loads(p.stdout)


def find(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


def seconds(duration):
    """"30s" / "1m" / "500ms" -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not m:
        raise AssertionError(f"not a duration: {duration!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def replace_once(text, old, new):
    if text.count(old) != 1:
        raise AssertionError(f"expected {old!r} exactly once in the rendered manifests")
    return text.replace(old, new)


def documented_patch(marker):
    """The yaml block of docs/deploy-kubernetes.md that holds marker: a kustomize patch."""
    with open(DEPLOY_DOC) as f:
        blocks = re.findall(r"^```yaml\n(.*?)^```$", f.read(), re.M | re.S)
    (patch,) = [b for b in blocks if marker in b]
    return patch


def kustomize_patched(marker, name):
    """The base rendered with the documented patch that holds marker, as
    k8s/kustomization.yaml with it would be."""
    directory = sim.paths.subdir(name)
    with open(os.path.join(directory, "kustomization.yaml"), "w") as f:
        f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources:\n  - {os.path.relpath(K8S, directory)}\n{documented_patch(marker)}")
    return kustomize(directory)


def kustomize_node_source():
    """The base with the patch docs/deploy-kubernetes.md gives for running with
    upstream.source node without the grants pod mode needs (the block that sets hostPID:
    false)."""
    return kustomize_patched("hostPID: false", "k8s-node-source")


def components():
    """The names of the base's components (k8s/components/NAME)."""
    return sorted(name for name in os.listdir(COMPONENTS)
                  if os.path.isfile(os.path.join(COMPONENTS, name, "kustomization.yaml")))


def kustomize_with(names, how="overlay"):
    """The base rendered with these components: listed in an overlay of k8s/ ("overlay"), or
    in a copy of k8s/kustomization.yaml itself ("base"), which is what Argo CD does with an
    Application's kustomize.components."""
    directory = sim.paths.subdir(f"k8s-{how}-{'-'.join(names) or 'none'}")
    if how == "overlay":
        base = os.path.relpath(K8S, directory)
        text = ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources:\n  - {base}\ncomponents:\n"
                + "".join(f"  - {base}/components/{n}\n" for n in names))
        with open(os.path.join(directory, "kustomization.yaml"), "w") as f:
            f.write(text)
        return kustomize(directory)
    copy = os.path.join(directory, "k8s")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(K8S, copy)
    with open(os.path.join(copy, "kustomization.yaml"), "a") as f:
        f.write("components:\n" + "".join(f"  - components/{n}\n" for n in names))
    return kustomize(copy)


class ManifestTest(SimTestCase):
    """Rendering and schema validation: no node, no spindle process."""

    @classmethod
    def build(cls, stack):
        if subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode:
            cls._fixture_error = "node is not installed"
            return
        if not os.path.isdir(os.path.join(VALIDATOR_DIR, "node_modules")):
            cls._fixture_error = "tests/k8s/node_modules is missing: run `make deps`"
            return
        if not os.access(KUBECTL, os.X_OK):
            if platform.machine() not in ("x86_64", "amd64"):
                cls._skip_reason = f"the npm package's kubectl is amd64 only ({platform.machine()})"
            else:
                cls._fixture_error = f"{KUBECTL} is missing: run `make deps`"
            return
        cls.base = kustomize(K8S)
        cls.example = kustomize(os.path.join(K8S, "example"))
        cls.with_component = {name: kustomize_with([name]) for name in components()}
        cls.objs = objects(cls.base)
        cls.ds = find(cls.objs, "DaemonSet", "spindle")
        cls.config_text = find(cls.objs, "ConfigMap", "spindle")["data"]["spindle.yaml"]

    def test_base_validates_against_the_api_schemas(self):
        rc, out = validate(self.base)
        self.assertEqual(rc, 0, out)
        kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in self.objs)
        self.assertEqual(kinds, [
            "ConfigMap/spindle", "ConfigMap/spindle-seccomp", "DaemonSet/spindle",
            "Namespace/spindle-system", "Service/spindle-metrics", "ServiceAccount/spindle"])
        self.assertEqual(out, f"ok: {len(self.objs)} objects")
        for o in self.objs:
            # Only built-in kinds: `kubectl apply -k k8s/` needs no CRD.
            group = o["apiVersion"].rpartition("/")[0]
            self.assertTrue("." not in group or group.endswith(".k8s.io"),
                            f"{o['apiVersion']} {o['kind']} is not a built-in kind")
            if o["kind"] != "Namespace":
                self.assertEqual(o["metadata"].get("namespace"), "spindle-system", o["kind"])

    def test_each_component_adds_only_its_own_objects(self):
        # Each renders on its own; their objects are validated all together below (one
        # validator run: it takes seconds).
        self.assertEqual(components(), ["alerts", "dashboard", "podmonitor", "servicemonitor"])
        added = {}
        for name, text in self.with_component.items():
            with self.subTest(component=name):
                objs = objects(text)
                base = [o for o in objs if o in self.objs]
                self.assertEqual(len(base), len(self.objs), "a base object changed")
                extra = [o for o in objs if o not in self.objs]
                added[name] = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in extra)
                for o in extra:
                    self.assertEqual(o["metadata"].get("namespace"), "spindle-system")
                    self.assertEqual(o["metadata"]["labels"]["app.kubernetes.io/part-of"],
                                     "spindle")
        self.assertEqual(added, {
            "alerts": ["PrometheusRule/spindle"], "dashboard": ["ConfigMap/spindle-dashboard"],
            "podmonitor": ["PodMonitor/spindle"], "servicemonitor": ["ServiceMonitor/spindle"]})

    def test_every_component_validates_and_renders_in_the_base_as_in_an_overlay(self):
        # Argo CD's kustomize.components adds them to the kustomization it renders (k8s/'s):
        # the same objects as an overlay of k8s/ that lists them.
        names = components()
        in_base = kustomize_with(names, how="base")
        self.assertEqual(in_base, kustomize_with(names))
        rc, out = validate(in_base)
        self.assertEqual(rc, 0, out)
        self.assertEqual(out, f"ok: {len(self.objs) + len(names)} objects")
        everything = objects(in_base)
        for text in self.with_component.values():
            self.assertTrue(all(o in everything for o in objects(text)))

    def test_every_way_of_scraping_reaches_the_admin_port(self):
        port = int(re.search(r'^  listen: "\$\{NODE_IP\}:(\d+)"$', self.config_text, re.M).group(1))
        template = self.ds["spec"]["template"]
        pod_labels = template["metadata"]["labels"]
        # A plain Prometheus: the Pod's annotations (the Pod address is the node's).
        self.assertIs(self.ds["spec"]["template"]["spec"]["hostNetwork"], True)
        self.assertEqual(template["metadata"]["annotations"], {
            "prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"})
        # The PodMonitor: the spindle Pods, their address at the admin port, the node label.
        pm = find(objects(self.with_component["podmonitor"]), "PodMonitor", "spindle")
        self.assertTrue(pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items())
        (endpoint,) = pm["spec"]["podMetricsEndpoints"]
        self.assertEqual(endpoint["path"], "/metrics")
        relabel = {r.get("targetLabel"): r for r in endpoint["relabelings"]}
        self.assertEqual(relabel["__address__"]["replacement"], f"$1:{port}")
        self.assertEqual(relabel["node"]["sourceLabels"], ["__meta_kubernetes_pod_node_name"])
        # The ServiceMonitor: the spindle-metrics Service, by its port's name, which is the
        # admin port on the spindle Pods.
        objs = objects(self.with_component["servicemonitor"])
        sm = find(objs, "ServiceMonitor", "spindle")
        svc = find(objs, "Service", "spindle-metrics")
        self.assertTrue(sm["spec"]["selector"]["matchLabels"].items()
                        <= svc["metadata"]["labels"].items())
        self.assertTrue(svc["spec"]["selector"].items() <= pod_labels.items())
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        (endpoint,) = sm["spec"]["endpoints"]
        (svc_port,) = [p for p in svc["spec"]["ports"] if p["name"] == endpoint["port"]]
        self.assertEqual(svc_port["targetPort"], port)
        self.assertEqual(endpoint["path"], "/metrics")
        (relabel,) = endpoint["relabelings"]
        self.assertEqual((relabel["sourceLabels"], relabel["targetLabel"]),
                         (["__meta_kubernetes_pod_node_name"], "node"))

    def test_example_validates_and_is_the_service_the_config_declares(self):
        rc, out = validate(self.example)
        self.assertEqual(rc, 0, out)
        objs = objects(self.example)
        clusterip = find(objs, "Service", "greeter")
        headless = find(objs, "Service", "greeter-pods")
        deploy = find(objs, "Deployment", "greeter")
        self.assertNotEqual(clusterip["spec"].get("clusterIP"), "None")
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        for svc in (clusterip, headless):
            self.assertTrue(svc["spec"]["selector"].items() <= labels.items(), svc)
        ns = deploy["metadata"]["namespace"]
        port = clusterip["spec"]["ports"][0]["port"]
        # What the config intercepts and resolves is exactly these two Services.
        self.assertIn(f'"greeter.{ns}.svc.cluster.local:{port}"', self.config_text)
        self.assertIn(f'"greeter-pods.{ns}.svc.cluster.local"', self.config_text)

    def test_validator_rejects_an_unknown_field(self):
        # A typo'd field in the spindle container, and one in the PodMonitor's endpoint.
        bad = replace_once(self.base, "      - args:\n",
                           "      - imagePullPolcy: Always\n        args:\n")
        rc, out = validate(bad)
        self.assertEqual(rc, 1, out)
        self.assertIn("imagePullPolcy", out)
        self.assertIn("DaemonSet/spindle", out)
        bad = replace_once(self.with_component["podmonitor"], "    path: /metrics\n",
                           "    path: /metrics\n    scrapeEvery: 15s\n")
        rc, out = validate(bad)
        self.assertEqual(rc, 1, out)
        self.assertIn("scrapeEvery", out)
        self.assertIn("PodMonitor/spindle", out)

    def test_validator_rejects_a_wrong_type(self):
        bad = replace_once(self.base, "terminationGracePeriodSeconds: 45",
                           'terminationGracePeriodSeconds: "45"')
        rc, out = validate(bad)
        self.assertEqual(rc, 1, out)
        self.assertIn("terminationGracePeriodSeconds", out)
        self.assertRegex(out, r"must be integer|not assignable to type 'number'")

    def test_validator_rejects_an_unknown_kind(self):
        bad = self.base + "---\napiVersion: apps/v1\nkind: DaemonSett\nmetadata:\n  name: x\n"
        rc, out = validate(bad)
        self.assertEqual(rc, 1, out)
        self.assertIn("no schema for apiVersion apps/v1 kind DaemonSett", out)

    def test_daemonset_meets_what_the_node_and_a_rollout_need(self):
        spec = self.ds["spec"]
        pod = spec["template"]["spec"]
        (c,) = [c for c in pod["containers"] if c["name"] == "spindle"]
        self.assertEqual(spec["updateStrategy"], {
            "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual(pod["dnsPolicy"], "ClusterFirstWithHostNet")
        self.assertEqual(pod["priorityClassName"], "system-node-critical")
        self.assertIn({"operator": "Exists"}, pod["tolerations"])  # every taint, every effect
        # Declared ports become hostPorts with hostNetwork: the surge Pod could not schedule.
        for container in pod["containers"] + pod.get("initContainers", []):
            self.assertNotIn("ports", container, container["name"])
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP")
        self.assertIn('"${NODE_IP}:9901"', self.config_text)
        # exec probes through admin.socket in the Pod's own volume: an httpGet on the shared
        # admin port could be answered by the other spindle of a rollout.
        probe = ["spindle", "--config", "/etc/spindle/spindle.yaml", "--probe"]
        self.assertEqual(c["readinessProbe"]["exec"]["command"], probe + ["/ready"])
        self.assertEqual(c["livenessProbe"]["exec"]["command"], probe + ["/healthz"])
        socket = re.search(r"^  socket: (\S+)$", self.config_text, re.M)
        self.assertTrue(socket, "the config sets no admin.socket")
        socket_dir = os.path.dirname(socket.group(1))
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertIn(socket_dir, mounts, "admin.socket's directory is not a volume of the Pod")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertIn("emptyDir", volumes[mounts[socket_dir]],
                      "admin.socket must be in the Pod's own volume, not shared with the host")
        self.assertTrue(c["resources"]["requests"] and c["resources"]["limits"])
        # Not privileged; all capabilities dropped but those the sim test below proves,
        # in the host's PID namespace (upstream.source pod finds Pods through /proc).
        sc = c["securityContext"]
        self.assertFalse(sc.get("privileged", False))
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(sorted(sc["capabilities"]["add"]),
                         ["BPF", "KILL", "NET_ADMIN", "PERFMON", "SETGID", "SETPCAP", "SETUID",
                          "SYS_ADMIN", "SYS_PTRACE"])
        self.assertIs(pod["hostPID"], True)
        # No init container and no hostPath into kubelet's seccomp directory: spindle
        # installs the profile on itself, from the spindle-seccomp ConfigMap.
        self.assertNotIn("initContainers", pod)
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertFalse([v for v in volumes.values()
                          if "seccomp" in v.get("hostPath", {}).get("path", "")])
        self.assertEqual(sc["seccompProfile"]["type"], "Unconfined")
        profile = c["args"][c["args"].index("--seccomp-profile") + 1]
        profile_dir, profile_name = os.path.split(profile)
        self.assertIn(profile_name, find(self.objs, "ConfigMap",
                                         volumes[self.volume_for(c, profile_dir)]["configMap"]
                                         ["name"])["data"])
        # cgroup2 and bpffs from the host.
        self.assertEqual(volumes[self.volume_for(c, "/sys/fs/cgroup")]["hostPath"]["path"],
                         "/sys/fs/cgroup")
        # Of bpffs, only spindle's own directory: the other pins on the node are not its own.
        self.assertEqual(volumes[self.volume_for(c, "/sys/fs/bpf/spindle")]["hostPath"]["path"],
                         "/sys/fs/bpf/spindle")
        self.assertIn("pin_path: /sys/fs/bpf/spindle", self.config_text)
        self.assertEqual(volumes[self.volume_for(c, "/etc/spindle")]["configMap"]["name"],
                         "spindle")
        self.assertEqual(c["args"][:2], ["--config", "/etc/spindle/spindle.yaml"])
        # SIGKILL must not cut the drain short.
        drain = re.search(r"^shutdown:\n(?:[ ]+#.*\n)*[ ]+drain: (\S+)", self.config_text, re.M)
        self.assertIsNotNone(drain, "shutdown.drain not found in the config")
        self.assertGreater(pod["terminationGracePeriodSeconds"], seconds(drain.group(1)))

    def test_the_documented_upstream_source_node_patch_takes_out_only_pod_modes_grants(self):
        text = kustomize_node_source()
        rc, out = validate(text)
        self.assertEqual(rc, 0, out)
        objs = objects(text)
        patched = find(objs, "DaemonSet", "spindle")
        pod = patched["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        self.assertIs(pod["hostPID"], False)
        caps = c["securityContext"]["capabilities"]["add"]
        self.assertEqual(sorted(caps),
                         ["BPF", "KILL", "NET_ADMIN", "PERFMON", "SETGID", "SETPCAP", "SETUID"])
        # Everything else is the base's, in the DaemonSet and in every other object.
        expected = json.loads(json.dumps(self.ds))
        expected["spec"]["template"]["spec"]["hostPID"] = False
        (ec,) = expected["spec"]["template"]["spec"]["containers"]
        ec["securityContext"]["capabilities"]["add"] = caps
        self.assertEqual(patched, expected)
        def others(objs):
            return sorted(json.dumps(o, sort_keys=True) for o in objs if o["kind"] != "DaemonSet")
        self.assertEqual(others(objs), others(self.objs))

    def test_the_documented_patch_against_double_scrapes_takes_out_only_the_annotations(self):
        objs = objects(kustomize_patched("path: /spec/template/metadata/annotations",
                                         "k8s-no-annotations"))
        expected = json.loads(json.dumps(self.objs))
        del find(expected, "DaemonSet", "spindle")["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(objs, expected)

    def volume_for(self, container, path):
        (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == path]
        return name

    def test_example_config_in_the_configmap_passes_check_config(self):
        if not os.access(sim.SPINDLE_BIN, os.X_OK):
            self.skipTest(f"{sim.SPINDLE_BIN} not built")
        path = os.path.join(sim.paths.subdir("k8s"), "spindle.yaml")
        with open(path, "w") as f:
            f.write(self.config_text)
        p = subprocess.run([sim.SPINDLE_BIN, "--check-config", path], capture_output=True,
                           text=True, timeout=30, env={**os.environ, "NODE_IP": "198.18.0.1"},
                           stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, p.stderr)
        # The image ships the same file (Dockerfile), so both are checked by this.
        with open(os.path.join(K8S, "spindle.yaml")) as f:
            self.assertEqual(f.read(), self.config_text)

    def test_dashboard_queries_name_metrics_spindle_exports(self):
        dash = json.loads(find(objects(self.with_component["dashboard"]), "ConfigMap",
                               "spindle-dashboard")["data"]["grafana-dashboard.json"])
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        names = set(re.findall(r"\b(spindle_[a-z_]+?)(?:_bucket)?\{", " ".join(exprs)))
        sources = ""
        for d, _, files in os.walk(os.path.join(ROOT, "daemon")):
            for name in files:
                if name.endswith((".cc", ".h")):
                    with open(os.path.join(d, name)) as f:
                        sources += f.read()
        for name in sorted(names):
            self.assertIn(f'"{name}"', sources, f"{name} is not a metric spindle exports")
        for needed in ("spindle_requests_total", "spindle_source_requests_total",
                       "spindle_request_duration_seconds", "spindle_redirects_total",
                       "spindle_endpoints"):
            self.assertIn(needed, names)


class PrivilegeTest(SimTestCase):
    """spindle in a simulated node with the DaemonSet's capabilities (bounding and inheritable
    sets cut to them, as a container runtime does for root), its seccomp profile, its PID
    namespace (the host's, or one of its own with its own /proc) and the ConfigMap's upstream
    section."""

    needs_spindle = True

    @classmethod
    def build(cls, stack):
        sys.path.insert(0, GRPC_DIR)
        import peers
        cls.peers = peers
        if grpcio_missing():
            cls._skip_reason = "python3-grpcio is not installed (make deps)"
            return
        objs = objects(kustomize(K8S))
        cls.caps, cls.host_pid, cls.container = cls.grants(objs)
        args = cls.container["args"]
        profile_name = os.path.basename(args[args.index("--seccomp-profile") + 1])
        cls.profile = json.loads(find(objs, "ConfigMap", "spindle-seccomp")["data"][profile_name])
        (config,) = objects(find(objs, "ConfigMap", "spindle")["data"]["spindle.yaml"])
        cls.upstream = config["upstream"]
        # The same with the patch docs/deploy-kubernetes.md gives for upstream.source node.
        cls.node_caps, cls.node_host_pid, _ = cls.grants(objects(kustomize_node_source()))
        cls.node = stack.enter_context(sim.Node())
        cls.client = cls.node.add_pod("client", n=2)
        cls.server = cls.node.add_pod("server", n=3)
        cls.svc = cls.node.add_service("echo", vip4=VIP4, ports=[PORT], backends=[cls.server])
        proc, cls.server_log = peers.start_server(cls.server)
        stack.callback(proc.stop)
        cls.source = os.path.relpath(cls.client.cgroup.path, sim.cgroup2_mount())

    @staticmethod
    def grants(objs):
        """(capabilities added, hostPID, the container) of the spindle DaemonSet in objs."""
        pod = find(objs, "DaemonSet", "spindle")["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        caps = [name.lower() for name in c["securityContext"]["capabilities"]["add"]]
        return caps, pod.get("hostPID", False), c

    def write_profile(self, profile):
        path = os.path.join(self.node.logdir, f"seccomp-{len(os.listdir(self.node.logdir))}.json")
        with open(path, "w") as f:
            json.dump(profile, f)
        return path

    def start(self, caps, profile, *, upstream=None, host_pid=None):
        """spindle with these grants; upstream (the config section) and host_pid default to
        the manifests'. Without host_pid, spindle has a PID namespace and a /proc of its own,
        as a container does; it is then stopped by SIGKILL only (unshare waits it out)."""
        host_pid = self.host_pid if host_pid is None else host_pid
        wrapper = [] if host_pid else ["unshare", "--pid", "--fork", "--mount-proc",
                                       "--kill-child"]
        wrapper += ["setpriv", "--inh-caps=-all",
                    "--bounding-set=-all" + "".join(f",+{cap}" for cap in caps)]
        cfg = sim.spindle.config(self.node, [self.svc], extra={
            "admin": {"listen": f"{self.node.addr4}:{ADMIN_PORT}"},
            "metrics": {"by_source": True},  # the counts by Pod show that naming Pods works
            "upstream": upstream if upstream is not None else self.upstream})
        # The DaemonSet's arguments after --config: the profile spindle installs on itself.
        args = self.container["args"][2:]
        args[args.index("--seccomp-profile") + 1] = self.write_profile(profile)
        sp = sim.Spindle(self.node, cfg, wrapper=wrapper, args=args)
        self.addCleanup(sp.close)
        sp.start(wait_ready=False)
        sim.wait_until(lambda: not sp.proc.alive() or any(
            "spindle: info: ready" in line for line in sp.stderr_lines()), 15,
            what="spindle ready or exited", details=sp.tail)
        return sp

    def metrics(self):
        from sim import prometheus as simprom
        return simprom.http_get(self.node, self.node.addr4, ADMIN_PORT, "/metrics").text

    def calls_by_source(self):
        out = {}
        for line in self.metrics().splitlines():
            m = re.match(r'spindle_source_requests_total\{source="([^"]*)",service="echo"\} (\S+)',
                         line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def call(self, count):
        """count unary calls from the client Pod over one channel: (the client's result, the
        addresses the backend saw them come from)."""
        res = self.peers.run_client(self.client, self.peers.target(VIP4, PORT), "unary",
                                    count=count)
        seen = {norm_ip(self.peers.peer_ip(e["peer"]))
                for e in self.server_log.starts(run=res["run"])}
        return res, seen

    def serve_calls(self, sp, count=40):
        """(the addresses the backend saw the calls come from, calls by calling Pod)."""
        res, seen = self.call(count)
        self.assertTrue(res.get("ok"), f"{json.dumps(res)[:1500]}\n{sp.tail()}")
        return seen, self.calls_by_source()

    def assertRefused(self, sp, pattern):
        self.assertFalse(sp.proc.alive(), f"spindle started\n{sp.tail()}")
        errors = [line for line in sp.stderr_lines() if line.startswith("spindle: error: ")]
        self.assertEqual(len(errors), 1, sp.tail())
        self.assertRegex(errors[0], pattern)

    def test_the_daemonsets_grants_serve_calls_from_the_calling_pod_counted_by_pod(self):
        self.assertEqual(sorted(self.caps), ["bpf", "kill", "net_admin", "perfmon", "setgid",
                                             "setpcap", "setuid", "sys_admin", "sys_ptrace"])
        # Neither CAP_DAC_READ_SEARCH nor file handles: open_by_handle_at with it reaches any
        # file of a host-backed mount (a known container escape).
        allowed = {n for rule in self.profile["syscalls"] for n in rule["names"]}
        self.assertFalse(allowed & {"open_by_handle_at", "name_to_handle_at"})
        self.assertIs(self.host_pid, True)
        self.assertEqual(self.upstream["source"], "pod")
        sp = self.start(self.caps, self.profile)
        self.assertTrue(sp.proc.alive(), sp.tail())
        seen, counts = self.serve_calls(sp)
        # upstream.source pod: the backend saw the client Pod, not the node (setns with
        # CAP_SYS_ADMIN and the profile's setns, /proc/<pid>/ns/net through the host's PID
        # namespace with CAP_SYS_PTRACE).
        self.assertEqual(seen, {self.client.ip4}, sp.tail())
        # Counted under the calling Pod: named by walking the cgroup tree, which needs no
        # capability and no file handle.
        self.assertEqual(counts, {self.source: 40.0}, sp.tail())
        # Under these grants the proxy, which parsed those calls, holds none of them.
        with open(f"/proc/{sp.proxy_pid()}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines())
        self.assertEqual({k: status[k].split() for k in ("Uid", "CapEff", "CapPrm", "CapBnd",
                                                          "NoNewPrivs", "Seccomp")},
                         {"Uid": ["65534"] * 4, "CapEff": ["0000000000000000"],
                          "CapPrm": ["0000000000000000"], "CapBnd": ["0000000000000000"],
                          "NoNewPrivs": ["1"], "Seccomp": ["2"]})
        self.assertEqual(sp.proc.stop(10), 0, sp.tail())

    def test_without_cap_bpf_or_cap_net_admin_spindle_refuses_to_start(self):
        # CAP_SYS_ADMIN, granted for pod mode, also allows what CAP_BPF does: CAP_BPF is what
        # the grants of upstream.source node (no CAP_SYS_ADMIN) load the programs with.
        node = {**self.upstream, "source": "node"}
        for caps, upstream, host_pid, name in (
                (self.node_caps, node, self.node_host_pid, "CAP_BPF"),
                (self.caps, None, None, "CAP_NET_ADMIN")):
            missing = name[len("CAP_"):].lower()
            with self.subTest(missing=missing):
                self.assertIn(missing, caps)
                sp = self.start([c for c in caps if c != missing], self.profile,
                                upstream=upstream, host_pid=host_pid)
                self.assertRefused(sp, name)

    def test_in_pod_mode_without_cap_sys_admin_or_cap_sys_ptrace_spindle_refuses_to_start(self):
        for missing, name in (("sys_admin", "CAP_SYS_ADMIN"), ("sys_ptrace", "CAP_SYS_PTRACE")):
            with self.subTest(missing=missing):
                sp = self.start([c for c in self.caps if c != missing], self.profile)
                self.assertRefused(sp, name)

    def test_the_profile_without_io_uring_serves_on_epoll(self):
        # What the runtimes' default profiles do: spindle runs on its epoll engine instead,
        # both of its processes, and says so.
        profile = json.loads(json.dumps(self.profile))
        for rule in profile["syscalls"]:
            rule["names"] = [n for n in rule["names"] if not n.startswith("io_uring_")]
        sp = self.start(self.caps, profile)
        self.assertTrue(sp.proc.alive(), sp.tail())
        self.assertIn("spindle: info: I/O engine: epoll, as io_uring cannot run here: "
                      "io_uring_setup: Operation not permitted (seccomp or "
                      "kernel.io_uring_disabled)", sp.stderr_lines(), sp.tail())
        seen, counts = self.serve_calls(sp)
        self.assertEqual(seen, {self.client.ip4}, sp.tail())
        self.assertEqual(counts, {self.source: 40.0}, sp.tail())
        self.assertIn('spindle_io_engine{engine="epoll"} 1', self.metrics())
        self.assertEqual(sp.proc.stop(10), 0, sp.tail())

    def test_in_pod_mode_the_profile_without_setns_is_refused(self):
        profile = json.loads(json.dumps(self.profile))
        for rule in profile["syscalls"]:
            rule["names"] = [n for n in rule["names"] if n != "setns"]
        sp = self.start(self.caps, profile)
        self.assertRefused(sp, r"entering a network namespace \(setns\): Operation not permitted")

    def test_without_the_host_pid_namespace_calls_fail_and_none_leaves_from_the_node(self):
        # The pid the BPF program recorded is the host's: in a PID namespace of its own,
        # spindle's /proc has no such process. Every call fails, counted; none is sent from
        # the node instead (that would bypass the Pod's egress policy).
        sp = self.start(self.caps, self.profile, host_pid=False)
        self.assertTrue(sp.proc.alive(), sp.tail())
        res, seen = self.call(10)
        self.assertEqual((res["calls_ok"], res["errors"]), (0, {"UNAVAILABLE": 10}),
                         f"{json.dumps(res)[:1500]}\n{sp.tail()}")
        self.assertEqual(seen, set(), "calls reached the backend")
        self.assertGreaterEqual(metric(self.metrics(), "spindle_upstream_socket_failures_total",
                                       reason="caller_namespace"), 1, sp.tail())
        self.assertTrue(any(re.search(r"/proc/\d+/ns/net: No such file or directory", line)
                            for line in sp.stderr_lines()), sp.tail())

    def test_with_upstream_source_node_the_documented_patch_serves_without_pod_mode_grants(self):
        # docs/deploy-kubernetes.md's patch takes out SYS_ADMIN, SYS_PTRACE and hostPID; with
        # source: node spindle serves all the same, and the backend sees the node instead of
        # the Pod: the trade-off the docs state.
        self.assertEqual(sorted(self.node_caps),
                         ["bpf", "kill", "net_admin", "perfmon", "setgid", "setpcap", "setuid"])
        self.assertIs(self.node_host_pid, False)
        sp = self.start(self.node_caps, self.profile, upstream={**self.upstream, "source": "node"},
                        host_pid=self.node_host_pid)
        self.assertTrue(sp.proc.alive(), sp.tail())
        seen, counts = self.serve_calls(sp)
        self.assertEqual(seen, {self.node.addr4}, sp.tail())
        self.assertEqual(counts, {self.source: 40.0}, sp.tail())
        self.assertFalse([line for line in sp.stderr_lines() if "CAP_PERFMON" in line], sp.tail())

    def test_without_cap_perfmon_in_node_mode_spindle_says_so_and_serves(self):
        # CAP_PERFMON loads the program that turns connects direct as the proxy begins to
        # exit; without it (nor CAP_SYS_ADMIN) spindle serves and warns.
        sp = self.start([c for c in self.node_caps if c != "perfmon"], self.profile,
                        upstream={**self.upstream, "source": "node"}, host_pid=self.node_host_pid)
        self.assertTrue(sp.proc.alive(), sp.tail())
        self.assertTrue([line for line in sp.stderr_lines()
                         if line.startswith("spindle: warn: no CAP_PERFMON")], sp.tail())
        seen, _counts = self.serve_calls(sp)
        self.assertEqual(seen, {self.node.addr4}, sp.tail())
