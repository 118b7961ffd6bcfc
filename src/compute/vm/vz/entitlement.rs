//! Whether the running binary may use Virtualization.framework: macOS lets only a binary
//! signed with the `com.apple.security.virtualization` entitlement start a VM (VZErrorDomain
//! code 2 otherwise). `doctor` asks `codesign` and says how to sign when it is missing.

/// The entitlement Virtualization.framework requires.
pub const ENTITLEMENT: &str = "com.apple.security.virtualization";

/// How to sign a binary ad hoc with the entitlement (no developer account needed).
pub fn sign_hint(exe: &std::path::Path) -> String {
    format!(
        "sign it: `codesign --force --sign - --entitlements assets/agentenv.entitlements {}` (from agentenv's source tree; scripts/mac-build.sh builds and signs); re-signing without --entitlements drops it",
        exe.display()
    )
}

/// What `codesign -d --entitlements - --xml EXE` said, as a verdict: `Ok` when the binary
/// holds the entitlement set to true, otherwise what is wrong. `status_ok` is codesign's exit.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub fn codesign_verdict(status_ok: bool, stdout: &str, stderr: &str) -> Result<(), String> {
    if !status_ok || stderr.contains("not signed at all") {
        let said = stderr.lines().last().unwrap_or("").trim();
        return Err(if stderr.contains("not signed at all") {
            "the binary is not signed".into()
        } else {
            format!("codesign cannot read its signature: {said}")
        });
    }
    // The XML plist: <key>ENTITLEMENT</key> then <true/>. Older codesign prints
    // `[Key] ENTITLEMENT` then `[Bool] true`, and some versions put it on stderr.
    let text = format!("{stdout}\n{stderr}");
    let Some(at) = text.find(ENTITLEMENT) else {
        return Err(format!(
            "the binary is signed without the {ENTITLEMENT} entitlement"
        ));
    };
    let after = text[at + ENTITLEMENT.len()..].trim_start();
    let after = after.strip_prefix("</key>").unwrap_or(after).trim_start();
    let after = after.strip_prefix("[Value]").unwrap_or(after).trim_start();
    if after.starts_with("<true/>") || after.starts_with("[Bool] true") {
        Ok(())
    } else {
        Err(format!(
            "the binary's {ENTITLEMENT} entitlement is not true"
        ))
    }
}

/// Asks `codesign` about the running binary.
#[cfg(target_os = "macos")]
pub fn check_running_binary() -> Result<String, (String, String)> {
    let exe = std::env::current_exe().map_err(|e| {
        (
            format!("cannot find the running binary: {e}"),
            "run agentenv by its path".to_string(),
        )
    })?;
    let out = std::process::Command::new("codesign")
        .args(["-d", "--entitlements", "-", "--xml"])
        .arg(&exe)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            (
                format!("cannot run codesign: {e}"),
                "install the Xcode command line tools: `xcode-select --install`".to_string(),
            )
        })?;
    codesign_verdict(
        out.status.success(),
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    )
    .map(|()| format!("{} has {ENTITLEMENT}", exe.display()))
    .map_err(|problem| (format!("{}: {problem}", exe.display()), sign_hint(&exe)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd"><plist version="1.0"><dict><key>com.apple.security.virtualization</key><true/></dict></plist>"#;

    #[test]
    fn a_binary_signed_with_the_entitlement_passes() {
        assert_eq!(
            codesign_verdict(true, PLIST, "Executable=/x/agentenv\n"),
            Ok(())
        );
        let old = "Executable=/x/agentenv\n[Dict]\n\t[Key] com.apple.security.virtualization\n\t[Value]\n\t\t[Bool] true\n";
        assert_eq!(codesign_verdict(true, old, ""), Ok(()));
    }

    #[test]
    fn a_missing_false_or_unsigned_entitlement_is_named() {
        let none = r#"<plist version="1.0"><dict></dict></plist>"#;
        assert!(codesign_verdict(true, none, "")
            .unwrap_err()
            .contains("without the com.apple.security.virtualization"));
        let off = PLIST.replace("<true/>", "<false/>");
        assert!(codesign_verdict(true, &off, "")
            .unwrap_err()
            .contains("not true"));
        let unsigned = "/x/agentenv: code object is not signed at all\n";
        assert_eq!(
            codesign_verdict(false, "", unsigned),
            Err("the binary is not signed".into())
        );
        assert!(codesign_verdict(false, "", "error: weird\n")
            .unwrap_err()
            .contains("weird"));
    }

    #[test]
    fn the_hint_signs_with_the_entitlements_file() {
        let hint = sign_hint(std::path::Path::new("/usr/local/bin/agentenv"));
        assert!(
            hint.contains("--entitlements assets/agentenv.entitlements /usr/local/bin/agentenv")
        );
    }
}
