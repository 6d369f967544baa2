//! The image config JSON (`config.config` moby- or OCI-style, rootfs, history).

use serde_json::{json, Map, Value};

use crate::{host_arch, BuildError, ConfigStyle, ImageSpec};

pub(super) fn to_bytes(what: &str, v: &Value) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(v).map_err(|e| BuildError::Json {
        what: what.to_string(),
        source: e,
    })
}

/// `config.config`, moby- or OCI-style.
fn runtime_config(spec: &ImageSpec, style: ConfigStyle) -> Value {
    let c = &spec.config;
    let strs = |v: &Option<Vec<String>>| v.as_ref().map(|v| json!(v)).unwrap_or(Value::Null);
    let set = |v: &Vec<String>| -> Value {
        let m: Map<String, Value> = v.iter().map(|k| (k.clone(), json!({}))).collect();
        Value::Object(m)
    };
    let labels: Map<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut m = Map::new();
    match style {
        ConfigStyle::Moby => {
            // The full moby container.Config, as `docker save` writes it:
            // empty strings and nulls rather than missing keys.
            m.insert("Hostname".into(), json!(""));
            m.insert("Domainname".into(), json!(""));
            m.insert("User".into(), json!(c.user));
            m.insert("AttachStdin".into(), json!(false));
            m.insert("AttachStdout".into(), json!(false));
            m.insert("AttachStderr".into(), json!(false));
            if !c.exposed_ports.is_empty() {
                m.insert("ExposedPorts".into(), set(&c.exposed_ports));
            }
            m.insert("Tty".into(), json!(false));
            m.insert("OpenStdin".into(), json!(false));
            m.insert("StdinOnce".into(), json!(false));
            m.insert(
                "Env".into(),
                if c.env.is_empty() {
                    Value::Null
                } else {
                    json!(c.env)
                },
            );
            m.insert("Cmd".into(), strs(&c.cmd));
            m.insert("Image".into(), json!(""));
            m.insert(
                "Volumes".into(),
                if c.volumes.is_empty() {
                    Value::Null
                } else {
                    set(&c.volumes)
                },
            );
            m.insert("WorkingDir".into(), json!(c.working_dir));
            m.insert("Entrypoint".into(), strs(&c.entrypoint));
            m.insert("OnBuild".into(), Value::Null);
            m.insert(
                "Labels".into(),
                if labels.is_empty() {
                    Value::Null
                } else {
                    Value::Object(labels)
                },
            );
        }
        ConfigStyle::Oci => {
            if !c.user.is_empty() {
                m.insert("User".into(), json!(c.user));
            }
            if !c.exposed_ports.is_empty() {
                m.insert("ExposedPorts".into(), set(&c.exposed_ports));
            }
            if !c.env.is_empty() {
                m.insert("Env".into(), json!(c.env));
            }
            if let Some(e) = &c.entrypoint {
                m.insert("Entrypoint".into(), json!(e));
            }
            if let Some(e) = &c.cmd {
                m.insert("Cmd".into(), json!(e));
            }
            if !c.volumes.is_empty() {
                m.insert("Volumes".into(), set(&c.volumes));
            }
            if !c.working_dir.is_empty() {
                m.insert("WorkingDir".into(), json!(c.working_dir));
            }
            if !labels.is_empty() {
                m.insert("Labels".into(), Value::Object(labels));
            }
        }
    }
    if let Some(s) = &c.stop_signal {
        m.insert("StopSignal".into(), json!(s));
    }
    for (k, v) in &c.extra {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m)
}

pub(super) fn image_config(
    spec: &ImageSpec,
    diff_ids: &[String],
    style: ConfigStyle,
    created: &str,
) -> Value {
    let mut history: Vec<Value> = spec
        .layers
        .iter()
        .map(|l| json!({"created": created, "created_by": l.created_by}))
        .collect();
    for h in &spec.history {
        let mut e = json!({"created": created, "created_by": h.created_by});
        if let Some(c) = &h.comment {
            e["comment"] = json!(c);
        }
        if h.empty_layer {
            e["empty_layer"] = json!(true);
        }
        history.push(e);
    }
    json!({
        "created": created,
        "architecture": spec.architecture.clone().unwrap_or_else(|| host_arch().to_string()),
        "os": spec.os.clone().unwrap_or_else(|| "linux".to_string()),
        "config": runtime_config(spec, style),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })
}
