//! The `intervene` binary: parse, validate, call the library, map errors to exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    quiet_mesa_device_select();
    cli::main()
}

/// Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` connects to Wayland and X11 to
/// find a "default" GPU; on a headless machine libwayland then prints `error: XDG_RUNTIME_DIR
/// is invalid or not set in the environment.` to stderr from a command that succeeds. The
/// backend ranks adapters itself, so the layer adds nothing: switch it off through its own
/// `disable_environment` variable, unless the user has set that variable. Done first thing,
/// while the process has one thread (setting the environment is not thread-safe for C code).
fn quiet_mesa_device_select() {
    const DISABLE: &str = "NODEVICE_SELECT";
    if std::env::var_os(DISABLE).is_none() {
        std::env::set_var(DISABLE, "1");
    }
}
