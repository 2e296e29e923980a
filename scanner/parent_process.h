// What this process can learn about its parent, for warnings printed once
// per process tree: a warning about a DEDUP_* value is left out when the
// parent runs this same library and was started with the same value (it
// printed the warning when it started, or left it out for the same reason).
//
// Learned from /proc/PPID/maps and /proc/PPID/environ, read as the program's
// user (a set-user-ID parent's are not readable: the warning is printed).
// Nothing is added to the environment the program and its children see,
// and nothing is left on disk. Streamed through small stack buffers: no
// allocation. Only called when there is a warning to print.
#pragma once

namespace dedup {

// Whether the parent process maps the file this library was loaded from.
bool parent_runs_this_library();
// Whether the parent's environment, as it was started, has name=value
// (value nullptr: has no name= at all).
bool parent_started_with(const char* name, const char* value);

}  // namespace dedup
