# Builds the example's tools: busybox with one link per applet, and a `hello` command.
bb="$busybox/bin/busybox"
"$bb" mkdir -p "$out/bin"
"$bb" cp "$bb" "$out/bin/busybox"
for applet in $("$bb" --list); do
  # The environment's bash is the real one, not busybox's.
  [ "$applet" = bash ] || "$bb" ln -s busybox "$out/bin/$applet"
done
printf '#!%s/bin/busybox sh\necho "${GREETING:-hello}, from $(hostname) as $(id -un) in $PWD"\n' "$out" > "$out/bin/hello"
"$bb" chmod +x "$out/bin/hello"
