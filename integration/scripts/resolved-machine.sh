#!/usr/bin/env bash
# A machine's systemd-resolved for a test: the real daemon (unpacked by scripts/install-deps.sh,
# never installed) on a system D-Bus of its own. Run it in a lab namespace under
# `unshare -m --propagation private`, so that its /run, /etc/passwd and /etc/resolv.conf are the
# test's and the host's stay untouched:
#   ip netns exec NS unshare -m --propagation private resolved-machine.sh STATE_DIR
# It prints `listening` once resolved owns its bus name, then waits; the processes it starts
# live in the namespace and go with it. Programs join this machine with `nsenter -t PID -m -n`.
set -euo pipefail

resolved=/opt/rma-mesh-test/systemd-resolved
state=$1
[[ -x $resolved/bin/systemd-resolved ]] || {
    echo "no $resolved: run scripts/install-deps.sh" >&2
    exit 1
}

mkdir -p "$state/system.d"
# resolved drops to this user; a copy of passwd and group with it, mounted below.
{ grep -v '^systemd-resolve:' /etc/passwd; echo 'systemd-resolve:x:990:990::/:/usr/sbin/nologin'; } >"$state/passwd"
{ grep -v '^systemd-resolve:' /etc/group; echo 'systemd-resolve:x:990:'; } >"$state/group"
# The machine's resolver is resolved's stub, as on a system that uses it; resolved knows the
# stub for its own and takes no upstream server from it.
echo 'nameserver 127.0.0.53' >"$state/resolv.conf"
cp "$resolved/root/usr/share/dbus-1/system.d/org.freedesktop.resolve1.conf" "$state/system.d/"
cat >"$state/system.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>$state/system.d</includedir>
</busconfig>
XML

mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd
for file in passwd group resolv.conf; do
    mount --bind "$state/$file" "/etc/$file"
done

# Waits up to 10 s for a condition, checking every 10 ms.
until_true() {
    for _ in $(seq 1000); do
        "$@" && return 0
        sleep 0.01
    done
    echo "timed out waiting for: $*" >&2
    exit 1
}

dbus-daemon --config-file="$state/system.conf" --nofork --nopidfile &
until_true test -S /run/dbus/system_bus_socket
"$resolved/bin/systemd-resolved" &
owned() {
    busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
        NameHasOwner s org.freedesktop.resolve1 2>/dev/null | grep -q true
}
until_true owned
echo "systemd-resolved listening on the test's bus"
wait
