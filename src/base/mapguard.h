/* mapguard.h - survive a mapped file shrinking under us.
 *
 * Reading a page of a file mapping past the file's current end raises SIGBUS: a model file that
 * is truncated or overwritten in place (`cp other.gguf model.gguf`) while mapped would kill the
 * process. Every mapping clara_map_file makes is registered here (a fixed array of atomics, so a
 * signal handler can read it). A program that must outlive such a file (the server) installs the
 * guard: a SIGBUS inside a registered mapping then replaces the whole mapping with zero pages,
 * counts a fault and lets the computation finish on zeros; its owner sees the count
 * (clara_mapguard_faults, clara_mapped_check) and throws the result away. A SIGBUS anywhere else
 * goes to the handler installed before (a sanitizer's) or kills the process as before.
 *
 * The library never installs the guard by itself. A registered mapping must not be unmapped
 * while another thread may still read it (the registry is cleared before munmap, and the
 * handler trusts the range it reads). */
#ifndef CLARA_BASE_MAPGUARD_H
#define CLARA_BASE_MAPGUARD_H

#include <stdbool.h>
#include <stddef.h>

#include "clara.h"

#define CLARA_MAPGUARD_SLOTS 64

/* Registers [addr, addr + len); returns its slot, or -1 when every slot is taken (the mapping is
 * then unguarded: a fault in it behaves as without the guard). */
int clara_mapguard_add(const void *addr, size_t len);
/* Forgets a slot (call before unmapping); -1 is ignored. */
void clara_mapguard_remove(int slot);
/* Faults absorbed in the slot's mapping since it was registered (0 for -1). */
unsigned clara_mapguard_faults(int slot);

/* Installs the process-wide SIGBUS handler (idempotent; thread-safe). CLARA_ERR_IO if sigaction
 * fails. */
clara_status clara_mapguard_install(void);
bool clara_mapguard_installed(void);

#endif
