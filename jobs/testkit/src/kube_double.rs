//! The Kubernetes API double (`tests/cluster/cluster.py`: stateful, OpenAPI-validated, RBAC
//! for ServiceAccount tokens, with controllers) started for a Rust test, and the real
//! `kubectl` to set up what the test needs as the cluster admin.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{tool, workspace_root, Server};

pub struct KubeDouble {
    pub dir: tempfile::TempDir,
    /// `https://127.0.0.1:PORT`
    pub server_url: String,
    /// Client-certificate kubeconfig of the cluster admin (RBAC does not apply to it).
    pub admin_kubeconfig: PathBuf,
    server: Server,
}

impl KubeDouble {
    /// Starts the double (without the podman kubelet) and waits until it serves.
    pub fn start() -> KubeDouble {
        let dir = tempfile::tempdir().unwrap();
        let script = workspace_root().join("tests/cluster/cluster.py");
        let log = std::fs::File::create(dir.path().join("cluster.log")).unwrap();
        let child = Command::new(tool("python3"))
            .arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let mut server = Server::from_child(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join("ready").exists() {
            let log = std::fs::read_to_string(dir.path().join("cluster.log")).unwrap_or_default();
            if server.exited() || Instant::now() > deadline {
                panic!("the Kubernetes API double did not start:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let port = std::fs::read_to_string(dir.path().join("port")).unwrap();
        KubeDouble {
            server_url: format!("https://127.0.0.1:{}", port.trim()),
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
            server,
        }
    }

    /// Runs the real kubectl as the admin; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with(&self.admin_kubeconfig, args, None)
    }

    /// `spec.replicas` of the fixture's writers, "router graph" (e.g. "3 2").
    pub fn writer_replicas(&self) -> String {
        self.kubectl(&[
            "-n",
            NS,
            "get",
            "deployment/router",
            "statefulset/graph",
            "-o",
            "jsonpath={.items[*].spec.replicas}",
        ])
        .trim()
        .to_string()
    }

    /// The reasons of every Event in the fixture's namespace, space-separated.
    pub fn event_reasons(&self) -> String {
        self.kubectl(&["-n", NS, "get", "events", "-o", "jsonpath={.items[*].reason}"])
    }

    /// `kubectl apply -f -` of `yaml` as the admin.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_with(&self.admin_kubeconfig, &["apply", "-f", "-"], Some(yaml))
    }

    fn kubectl_with(&self, kubeconfig: &std::path::Path, args: &[&str], input: Option<&str>) -> String {
        let mut child = Command::new(tool("kubectl"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// A kubeconfig authenticating as ServiceAccount `namespace/name` with a token from the
    /// TokenRequest API, so the double enforces that account's RBAC.
    pub fn token_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(&["create", "token", name, "-n", namespace]);
        let path = self.dir.path().join(format!("{namespace}-{name}.kubeconfig"));
        let ca = self.dir.path().join("pki/ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: {name}\n  user:\n    token: {}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: {name}\n    namespace: {namespace}\n\
             current-context: double\n",
            self.server_url,
            ca.display(),
            token.trim()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The double's log (requests and refusals), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cluster.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.server.kill();
    }
}

// ---- the restore Job's namespace, as the chart sets it up ----------------------------------

/// The namespace of the fixture.
pub const NS: &str = "sts";

/// The label selector of the fixture's writers (router and graph).
pub const SELECTOR: &str = "sts-backup/writer=stackgraph";

/// The Role the chart grants the restore Job; `statefulset_verbs` lets a test take one away.
pub fn role(statefulset_verbs: &str) -> String {
    format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: restore, namespace: {NS}}}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: {statefulset_verbs}
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get]
"#
    )
}

pub fn workloads() -> String {
    let pod = |app: &str| {
        format!(
            "    metadata: {{labels: {{app: {app}}}}}\n    spec: {{containers: [{{name: main, image: registry.example/{app}:1}}]}}\n"
        )
    };
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: restore, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: restore, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: restore}}
subjects: [{{kind: ServiceAccount, name: restore, namespace: {NS}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: router, namespace: {NS}, labels: {{sts-backup/writer: stackgraph}}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: router}}}}
  template:
{router}---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: graph, namespace: {NS}, labels: {{sts-backup/writer: stackgraph}}}}
spec:
  replicas: 2
  serviceName: graph
  selector: {{matchLabels: {{app: graph}}}}
  template:
{graph}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ui, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: ui}}}}
  template:
{ui}---
apiVersion: batch/v1
kind: Job
metadata: {{name: restore-run, namespace: {NS}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: restore, image: registry.example/restore:1}}]
"#,
        router = pod("router"),
        graph = pod("graph"),
        ui = pod("ui"),
    )
}

/// A double with namespace `sts`: the writers router (Deployment, 3) and graph
/// (StatefulSet, 2), an unrelated Deployment ui (2), the restore Job, and the
/// ServiceAccount `restore` bound to [`role`].
pub fn restore_namespace(statefulset_verbs: &str) -> (KubeDouble, PathBuf) {
    let double = KubeDouble::start();
    double.kubectl(&["create", "namespace", NS]);
    double.apply(&role(statefulset_verbs));
    double.apply(&workloads());
    let kubeconfig = double.token_kubeconfig(NS, "restore");
    (double, kubeconfig)
}

pub const ALL_VERBS: &str = "[get, list, watch, patch]";
