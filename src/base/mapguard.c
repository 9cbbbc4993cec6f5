/* mapguard.c - the registry of file mappings and the SIGBUS handler that absorbs faults in them
 * (mapguard.h). Everything the handler touches is a lock-free atomic in static storage. */
#define _POSIX_C_SOURCE 200809L
#include "base/mapguard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "base/status.h"

typedef struct {
    atomic_bool used;       /* claimed by a registration */
    atomic_uintptr_t start; /* 0 while the slot is free or being filled */
    atomic_size_t len;      /* written before start is published */
    atomic_uint faults;     /* faults absorbed since registration */
} guard_slot;

static guard_slot g_slots[CLARA_MAPGUARD_SLOTS];
static struct sigaction g_prev; /* the handler before ours; written once, before ours is live */
static atomic_bool g_installed;
static pthread_mutex_t g_install_mu = PTHREAD_MUTEX_INITIALIZER;

int clara_mapguard_add(const void *addr, size_t len) {
    if (!addr || len == 0) return -1;
    for (int i = 0; i < CLARA_MAPGUARD_SLOTS; i++) {
        bool expected = false;
        if (!atomic_compare_exchange_strong(&g_slots[i].used, &expected, true)) continue;
        atomic_store(&g_slots[i].faults, 0);
        atomic_store_explicit(&g_slots[i].len, len, memory_order_relaxed);
        /* release: a handler that sees start also sees len */
        atomic_store_explicit(&g_slots[i].start, (uintptr_t)addr, memory_order_release);
        return i;
    }
    return -1;
}

void clara_mapguard_remove(int slot) {
    if (slot < 0 || slot >= CLARA_MAPGUARD_SLOTS) return;
    atomic_store_explicit(&g_slots[slot].start, 0, memory_order_release);
    atomic_store_explicit(&g_slots[slot].len, 0, memory_order_relaxed);
    atomic_store(&g_slots[slot].used, false);
}

unsigned clara_mapguard_faults(int slot) {
    if (slot < 0 || slot >= CLARA_MAPGUARD_SLOTS) return 0;
    return atomic_load(&g_slots[slot].faults);
}

/* If addr lies in a registered mapping, puts read-only zero pages over the whole mapping (so the
 * rest of the computation reads zeros instead of faulting once per page) and counts the fault.
 * mmap is a plain system call, safe here; MAP_FIXED replaces the file pages atomically. */
static bool absorb(uintptr_t addr) {
    for (int i = 0; i < CLARA_MAPGUARD_SLOTS; i++) {
        uintptr_t start = atomic_load_explicit(&g_slots[i].start, memory_order_acquire);
        if (start == 0 || addr < start) continue;
        size_t len = atomic_load_explicit(&g_slots[i].len, memory_order_relaxed);
        if (addr - start >= len) continue;
        void *p =
            mmap((void *)start, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) return false;
        atomic_fetch_add(&g_slots[i].faults, 1);
        return true;
    }
    return false;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    int saved = errno;
    /* si_code > 0: raised by the kernel for a memory access, not sent by kill() */
    bool ours = si && si->si_code > 0 && absorb((uintptr_t)si->si_addr);
    errno = saved;
    if (ours) return; /* the faulting load runs again and reads a zero page */
    if ((g_prev.sa_flags & SA_SIGINFO) && g_prev.sa_sigaction) {
        g_prev.sa_sigaction(sig, si, uc); /* e.g. a sanitizer's report */
        return;
    }
    if (!(g_prev.sa_flags & SA_SIGINFO) && g_prev.sa_handler != SIG_DFL &&
        g_prev.sa_handler != SIG_IGN) {
        g_prev.sa_handler(sig);
        return;
    }
    /* The default action, as without the guard: the signal is blocked while we run, so the
     * raised one is delivered (and kills) the moment we return. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

clara_status clara_mapguard_install(void) {
    pthread_mutex_lock(&g_install_mu);
    clara_status s = CLARA_OK;
    if (!atomic_load(&g_installed)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &g_prev) != 0)
            s = clara_fail(CLARA_ERR_IO, "cannot install the SIGBUS handler: %s", strerror(errno));
        else
            atomic_store(&g_installed, true);
    }
    pthread_mutex_unlock(&g_install_mu);
    return s;
}

bool clara_mapguard_installed(void) {
    return atomic_load(&g_installed);
}
