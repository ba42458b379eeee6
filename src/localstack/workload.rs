//! The sample workload the demo and the tests scale.

use k8s_openapi::api::apps::v1::Deployment;

/// A Deployment of `replicas` pods labelled `app: <name>`: the workload the demo and the
/// tests scale (kwok runs its pods; the image is never pulled).
pub fn workload(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": name, "image": format!("registry.example/{name}:1") }] }
            }
        }
    }))
    .expect("a valid Deployment")
}
