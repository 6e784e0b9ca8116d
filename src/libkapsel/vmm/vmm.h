/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM engine's internal interfaces. Threads: one per vCPU (KVM_RUN loop, device register
 * accesses run on it), one event thread (loop.c: signals, console input, and later ioeventfd /
 * irqfd for virtio). Devices lock themselves; the buses are built before any thread starts and
 * are read-only afterwards, so dispatch takes no lock.
 */
#pragma once
#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <kapsel/error.h>
#include <kapsel/vm.h>

/* ---- guest memory (memory.c) ---- */

/*
 * Guest-physical layout (docs/vm.md): RAM from 0 up to the 32-bit MMIO hole, the hole itself
 * [KAP_MMIO_HOLE_START, 4 GiB) for LAPIC, IOAPIC and device MMIO, then the rest of RAM from 4 GiB.
 */
#define KAP_MMIO_HOLE_START 0xC0000000ULL
#define KAP_4G		    0x100000000ULL
#define KAP_IOAPIC_ADDR	    0xFEC00000ULL
#define KAP_LAPIC_ADDR	    0xFEE00000ULL
/* Intel VMX needs three pages for the real-mode TSS and one for the EPT identity map. */
#define KAP_TSS_ADDR	      0xFFFBD000ULL
#define KAP_IDENTITY_MAP_ADDR 0xFFFBC000ULL

struct kap_guest_mem {
	uint8_t *host;	   /* all of RAM, mapped once: low RAM then high RAM */
	uint64_t size;	   /* total RAM */
	uint64_t low_size; /* RAM below the hole: [0, low_size) */
	int fd;		   /* the memfd when shared (--mem-shared), else -EBADF */
	bool dirty_log;	   /* KVM_MEM_LOG_DIRTY_PAGES is set on the slots */
	/*
	 * The pages the VMM itself wrote (fw_cfg DMA, hypercall results) since the last
	 * kap_mem_dirty_log: KVM logs only the guest's writes. Allocated when logging starts.
	 */
	_Atomic uint64_t *vmm_dirty;
	/*
	 * Soft path only (kap_mem_track_written): the same record, kept for the soft CPU, which
	 * drops the translations of pages the VMM wrote (vmm/soft/cpu.c); one per soft vCPU.
	 */
	struct kap_mem_written *written;
	/*
	 * Soft path: the dirty log is on, so the soft CPU marks each page it stores to in
	 * vmm_dirty (kap_mem_log_store), the log KVM keeps in the kernel on the KVM path.
	 */
	atomic_bool soft_log;
};

/* A soft vCPU stored to RAM page idx: logged while the dirty log is on (snapshots, migration). */
static inline void kap_mem_log_store(struct kap_guest_mem *m, uint64_t idx)
{
	if (!atomic_load_explicit(&m->soft_log, memory_order_acquire))
		return;
	_Atomic uint64_t *w = &m->vmm_dirty[idx / 64];
	uint64_t bit = 1ULL << (idx % 64);
	if (!(atomic_load_explicit(w, memory_order_relaxed) & bit))
		atomic_fetch_or(w, bit);
}

/*
 * The soft CPU's written-page records (docs/vm.md, Device writes and translated code): one per
 * vCPU, each a bit per RAM page and an any flag set after the bits. The VMM's writes mark every
 * record (kap_mem_mark_dirty); a vCPU's store to a page another vCPU translated code from marks
 * that vCPU's (kap_mem_written_mark). Each vCPU takes its own at block boundaries. owners has a
 * bit per vCPU for each RAM page some of its blocks came from: vmm/soft/cpu.c keeps it.
 */
struct kap_mem_written_rec {
	atomic_bool any;
	_Atomic uint64_t *bits;
};
struct kap_mem_written {
	unsigned int n;		  /* records: one per soft vCPU */
	uint64_t words;		  /* 64-bit words in each bitmap */
	_Atomic uint64_t *owners; /* per RAM page */
	struct kap_mem_written_rec rec[];
};
/* Starts recording the VMM's writes to RAM in m->written, for nrec soft vCPUs. */
int kap_mem_track_written(struct kap_guest_mem *m, unsigned int nrec, struct kapsel_error **err);
/* Marks RAM page index page in record rec (then its any flag). */
void kap_mem_written_mark(struct kap_mem_written *w, unsigned int rec, uint64_t page);
/* Whether the VMM's writes are being recorded (a device then marks what it writes). */
static inline bool kap_mem_tracks_writes(const struct kap_guest_mem *m)
{
	return m->vmm_dirty || m->written;
}

/* How kap_mem_init backs guest RAM (memory.c). */
enum {
	KAP_MEM_SHARED = 1u << 0,    /* a shareable memfd (--mem-shared) */
	KAP_MEM_HUGETLB = 1u << 1,   /* a memfd of reserved 2 MiB huge pages (--mem-hugepages) */
	KAP_MEM_MERGEABLE = 1u << 2, /* MADV_MERGEABLE: KSM may merge it (--mem-merge) */
};
/*
 * Records that the VMM wrote [gpa, gpa + len) (already checked by kap_mem_ptr), for the dirty
 * log; kap_mem_write does it itself. Any thread.
 */
void kap_mem_mark_dirty(const struct kap_guest_mem *m, uint64_t gpa, uint64_t len);
/* Anonymous memory advised for huge pages, or a memfd (KAP_MEM_SHARED, KAP_MEM_HUGETLB). */
int kap_mem_init(struct kap_guest_mem *m, uint64_t size, unsigned int flags,
		 struct kapsel_error **err);
/*
 * Turns KVM's dirty page logging (KVM_MEM_LOG_DIRTY_PAGES) on or off on every RAM slot; from
 * then on kap_mem_dirty_log reports the pages the guest wrote.
 */
int kap_mem_set_dirty_log(struct kap_guest_mem *m, int vm_fd, bool on, struct kapsel_error **err);
/*
 * The pages written since the last call (or since logging began), as a bitmap over the RAM's
 * host offsets (bit n: bytes [n*4096, n*4096+4096)), which it clears. *bitmap is malloc'd.
 */
int kap_mem_dirty_log(struct kap_guest_mem *m, int vm_fd, uint64_t **bitmap,
		      struct kapsel_error **err);
int kap_mem_register(struct kap_guest_mem *m, int vm_fd, struct kapsel_error **err);
void kap_mem_destroy(struct kap_guest_mem *m);
/* RAM of size bytes from a snapshot's memory file, mapped MAP_PRIVATE: pages load lazily. */
int kap_mem_init_file(struct kap_guest_mem *m, uint64_t size, const char *path,
		      struct kapsel_error **err);
/* Host pointer to [gpa, gpa+len) when it lies wholly inside one RAM region, else NULL. */
void *kap_mem_ptr(const struct kap_guest_mem *m, uint64_t gpa, uint64_t len);
/* Bounds-checked copies; -EFAULT when any byte is outside RAM. */
int kap_mem_read(const struct kap_guest_mem *m, uint64_t gpa, void *buf, uint64_t len);
int kap_mem_write(const struct kap_guest_mem *m, uint64_t gpa, const void *buf, uint64_t len);
/* The end of RAM above 4 GiB (KAP_4G when there is none). */
uint64_t kap_mem_high_end(const struct kap_guest_mem *m);

/* ---- buses (bus.c): port I/O and MMIO dispatch ---- */

/* What a device implements. offset is relative to its registered base; len is 1, 2, 4 or 8. */
struct kap_dev_ops {
	const char *name;
	void (*read)(void *dev, uint64_t offset, void *data, unsigned int len);
	void (*write)(void *dev, uint64_t offset, const void *data, unsigned int len);
	void (*reset)(void *dev);
};

struct kap_bus_range {
	uint64_t base, len;
	const struct kap_dev_ops *ops;
	void *dev;
};

struct kap_bus {
	const char *name;	      /* "port" or "mmio", for the log */
	struct kap_bus_range *ranges; /* sorted by base, non-overlapping */
	size_t n, cap;
	/* Unclaimed-access log, rate limited: a budget per second. */
	pthread_mutex_t log_lock;
	int64_t log_window;
	unsigned int log_count;
	atomic_uint_fast64_t unclaimed;
};

void kap_bus_init(struct kap_bus *b, const char *name);
void kap_bus_destroy(struct kap_bus *b);
/* -EEXIST when [base, base+len) overlaps a registered range. */
int kap_bus_register(struct kap_bus *b, uint64_t base, uint64_t len, const struct kap_dev_ops *ops,
		     void *dev, struct kapsel_error **err);
/* Dispatches one access; unclaimed reads return all ones, and are logged (rate limited). */
void kap_bus_access(struct kap_bus *b, uint64_t addr, void *data, unsigned int len, bool write);
/* Calls every device's reset. */
void kap_bus_reset(struct kap_bus *b);

/* ---- KVM system fd (kvm.c) ---- */

struct kap_kvm {
	int fd;
	int run_size;		  /* KVM_GET_VCPU_MMAP_SIZE */
	int max_vcpus;		  /* KVM_CAP_MAX_VCPUS */
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID */
};

int kap_kvm_open(struct kap_kvm *k, struct kapsel_error **err);
void kap_kvm_close(struct kap_kvm *k);

/* ---- event loop (loop.c) ---- */

typedef void (*kap_loop_fn)(void *opaque, uint32_t events);

struct kap_loop_handler {
	int fd;
	kap_loop_fn fn;
	void *opaque;
};

#define KAP_LOOP_MAX 64

struct kap_loop {
	int epfd;
	int wake_fd; /* eventfd: written by kap_vm_request_exit */
	struct kap_loop_handler handlers[KAP_LOOP_MAX];
	size_t n;
};

int kap_loop_init(struct kap_loop *l, struct kapsel_error **err);
void kap_loop_destroy(struct kap_loop *l);
/* Calls fn on the event thread whenever fd is ready for events (EPOLLIN...). */
int kap_loop_add(struct kap_loop *l, int fd, uint32_t events, kap_loop_fn fn, void *opaque,
		 struct kapsel_error **err);
void kap_loop_del(struct kap_loop *l, int fd);
/* Runs until *stop is set (and the wake fd written). */
void kap_loop_run(struct kap_loop *l, atomic_bool *stop);
void kap_loop_wake(struct kap_loop *l);

/* ---- console backend (console.c) ---- */

struct kap_vm;

struct kap_console {
	int out_fd;  /* -1: none */
	int in_fd;   /* -1: no input */
	bool raw;    /* we put a tty in raw mode and must restore it */
	bool escape; /* saw Ctrl-A */
	void *termios_saved;
	void (*input)(void *dev, const uint8_t *buf, size_t len); /* the UART's receiver */
	void *input_dev;
	struct kap_vm *vm;
};

int kap_console_open(struct kap_console *c, const struct kapsel_vm_config *cfg,
		     struct kapsel_error **err);
void kap_console_close(struct kap_console *c);
/* Output from the guest (UART, hypercall console write). Never fails the guest. */
void kap_console_write(struct kap_console *c, const void *buf, size_t len);
int kap_console_attach(struct kap_console *c, struct kap_loop *l, struct kapsel_error **err);

/* ---- vCPUs (vcpu.c) ---- */

/* Exit reasons counted for GET /metrics (api.c). */
enum kap_exit_kind {
	KAP_EXIT_IO,
	KAP_EXIT_MMIO,
	KAP_EXIT_INTR,	 /* a signal: a kick, or the host's */
	KAP_EXIT_SYSTEM, /* system events: shutdown, reset */
	KAP_EXIT_FAULT,	 /* shutdown (triple fault), internal error, failed entry, hlt */
	KAP_EXIT_OTHER,
	KAP_EXIT_KINDS,
};

struct kap_vcpu {
	struct kap_vm *vm;
	unsigned int id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	/* --accel soft: the soft CPU's state (vmm/soft/); then fd is -EBADF and run NULL. */
	struct kap_soft_cpu *soft;
	/* Written by this vCPU's thread only, read by the API thread: relaxed atomics. */
	_Atomic uint64_t exits[KAP_EXIT_KINDS];
};

int kap_vcpu_create(struct kap_vm *vm, unsigned int id, struct kapsel_error **err);
void kap_vcpu_destroy(struct kap_vcpu *v);
int kap_vcpu_start(struct kap_vcpu *v, struct kapsel_error **err);
/* Makes a vCPU leave KVM_RUN (immediate_exit + a signal). */
void kap_vcpu_kick(struct kap_vcpu *v);
void kap_vcpu_join(struct kap_vcpu *v);
/* The signal kap_vcpu_kick uses; its handler is installed once by kap_vcpu_signals_init. */
int kap_vcpu_signals_init(struct kapsel_error **err);
/* The vCPU thread's CPU time in ns (0 when not running). */
uint64_t kap_vcpu_cpu_ns(struct kap_vcpu *v);
/* The name of an exit kind ("io", "mmio"...). */
const char *kap_vcpu_exit_name(enum kap_exit_kind k);

/* ---- the VM (vm.c) ---- */

#define KAP_MAX_VCPUS 64

enum kap_vm_end {
	KAP_VM_RUNNING,
	KAP_VM_POWEROFF,   /* ACPI sleep S5, hypercall power-off */
	KAP_VM_RESET,	   /* i8042 0xFE, ACPI reset register */
	KAP_VM_DEBUG_EXIT, /* status (C << 1) | 1 */
	KAP_VM_SIGNAL,	   /* SIGINT/SIGTERM on the host */
	KAP_VM_QUIT,	   /* Ctrl-A x on the console */
	KAP_VM_FAULT,	   /* triple fault, internal error, failed entry */
	KAP_VM_PANIC,	   /* the guest kernel reported a panic (pvpanic) */
	KAP_VM_MIGRATED,   /* the guest now runs on a migration's destination */
};

struct kap_vm {
	const struct kapsel_vm_config *cfg;
	struct kap_kvm kvm;
	int fd;
	struct kap_guest_mem mem;
	struct kap_bus pio, mmio;
	struct kap_vcpu vcpus[KAP_MAX_VCPUS];
	unsigned int ncpus;
	struct kap_loop loop;
	int signal_fd; /* SIGINT/SIGTERM */
	struct kap_console console;
	struct kvm_cpuid2 *cpuid; /* filtered template; per-vCPU ids patched in cpuid.c */
	struct kap_boot_entry *entry;
	bool soft; /* --accel soft (or auto without KVM): no KVM VM, vCPUs are vmm/soft/ */
	struct kap_soft_pic *soft_pic; /* soft only: the 8259 pair and 8254 (vmm/soft/irq.h) */
	struct kap_soft_pit *soft_pit;
	struct kap_soft_ioapic *soft_ioapic; /* and what KVM's irqchip and irqfds are */
	struct kap_soft_irqfds *soft_irqfds;

	/* How it ended: first kap_vm_request_exit wins. */
	pthread_mutex_t end_lock;
	atomic_bool stop;
	enum kap_vm_end end;
	int status;
	char fault[512];

	/* Devices (the files in devices/), owned here, registered explicitly in vm.c. */
	struct kap_serial *serial;
	struct kap_i8042 *i8042;
	struct kap_debug_exit *debug_exit;
	struct kap_rtc *rtc;
	struct kap_hypercall *hypercall;
	struct kap_acpi_pm *acpi_pm;
	struct kap_fw_cfg *fw_cfg;
	struct kap_debugcon *debugcon; /* --firmware only (x86/boot-firmware.c) */
	/* --firmware: the ACPI tables built at address 0, for fw_cfg's etc/acpi/tables. */
	uint8_t *fw_acpi;
	size_t fw_acpi_len;
	/* virtio devices (virtio/), one virtio-mmio window each. */
	struct kap_virtio_slot *virtio;
	unsigned int nvirtio;
	/* virtio-pci (--transport pci): the host bridge, and the GSI routing table (vm.c). */
	struct kap_pci_host *pci;
	pthread_mutex_t route_lock;
	struct kvm_irq_routing *routes; /* the irqchip defaults plus one MSI entry per vector */
	unsigned int next_gsi;
	/* What the config names, opened and checked before /dev/kvm (vm.c check_inputs). */
	struct kap_vm_inputs *in;

	/*
	 * Pause (pause.c): while pause_req is set, vCPUs park at the top of their loop;
	 * pause_lock guards parked, paused and the saved clock.
	 */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_req;
	unsigned int parked;
	bool paused;
	bool suspended;		    /* ACPI S3 (pause.c): parked until kap_vm_wake */
	struct kap_vm_clock *clock; /* saved while paused */
	int64_t paused_at_ms, paused_total_ms;
	int64_t started_ms;	/* monotonic, for uptime */
	int64_t started_wall_s; /* epoch seconds, for GET / */
	/* The control API (api.c); NULL without --name or --api-sock. */
	struct kap_api *api;
	/* The state file being restored (snapshot.c); NULL for a boot. */
	struct kap_snap *snap;
	/*
	 * Live migration (migrate.c): the outgoing one, NULL when none was started; migrating is
	 * set while it runs (snapshots and PATCH /vm are refused then). incoming_fd: the
	 * destination's listening socket for --incoming, opened before anything else.
	 */
	struct kap_migration *mig;
	atomic_bool migrating;
	int incoming_fd;
	char *incoming_path; /* its file (unix:), removed when it closes */
	int incoming_conn;   /* the source, between the loaded state and the acknowledgement */
	/* --jail (jail.c): closed once every host resource is open, before any thread starts. */
	struct kap_jail *jail;
};

/* ---- pause and resume (pause.c) ---- */

/* Parks every vCPU and saves the guest's clock. -EBUSY when already paused. API thread only. */
int kap_vm_pause(struct kap_vm *vm, struct kapsel_error **err);
/* Restores the clock and lets the vCPUs run. -EBUSY when not paused. API thread only. */
int kap_vm_resume(struct kap_vm *vm, struct kapsel_error **err);
/*
 * ACPI S3 (pause.c): the guest asked to sleep (PM1a_CNT, from its vCPU thread): every vCPU
 * parks, RAM and devices stay as they are. kap_vm_wake starts the BSP at the FACS waking
 * vector with WAK_STS set, the APs waiting for INIT/SIPI; the guest's clocks ran on.
 */
void kap_vm_suspend(struct kap_vm *vm);
int kap_vm_wake(struct kap_vm *vm, struct kapsel_error **err);
bool kap_vm_is_suspended(struct kap_vm *vm);
/* Called by a vCPU thread that saw pause_req: waits until resumed or stopped. */
void kap_vm_park(struct kap_vcpu *v);
void kap_vm_pause_init(struct kap_vm *vm);
void kap_vm_pause_destroy(struct kap_vm *vm);
bool kap_vm_is_paused(struct kap_vm *vm);
/* The clock the pause saved: bit 0 set when *clock is valid, bit 1 when *tsc is. Paused only. */
int kap_vm_saved_clock(struct kap_vm *vm, struct kvm_clock_data *clock, uint64_t *tsc);

/* ---- snapshot and restore (snapshot.c; docs/vm.md, Snapshot format) ---- */

/*
 * Writes guest RAM to mem_path and the machine state to state_path. Paused VM, API thread.
 * diff: only the pages dirtied since the last snapshot, into a sparse memory file (a Full
 * snapshot must have been taken first).
 */
int kap_vm_snapshot(struct kap_vm *vm, const char *mem_path, const char *state_path, bool diff,
		    struct kapsel_error **err);
struct kap_snap;
/* Reads and checks a state file (magic, version, length, checksum, kapsel version). */
int kap_snap_read(const char *path, struct kap_snap **out, struct kapsel_error **err);
void kap_snap_free(struct kap_snap *s);
/*
 * The machine config the snapshot needs, into c (cpus, mem_size, cpu_features into *features
 * (malloc'd), pit, debug_exit); what the user gave (given) must not contradict it.
 */
int kap_snap_config(const struct kap_snap *s, const struct kapsel_vm_config *given,
		    struct kapsel_vm_config *c, char **features, struct kapsel_error **err);
/* Loads the devices', irqchip's, vCPUs' and clock's state, in KVM's order. */
int kap_snap_load(struct kap_vm *vm, const struct kap_snap *s, struct kapsel_error **err);
/*
 * Whether c's virtio devices can take the snapshot's: their number and transport (each
 * device is checked when it is loaded); virtio-fs never. who names the command.
 */
int kap_snap_check_devices(const struct kap_snap *s, const struct kapsel_vm_config *c,
			   const char *who, struct kapsel_error **err);
/* Keeps every virtio device thread out of its rings (hold) or lets them back (snapshot.c). */
void kap_snap_quiesce(struct kap_vm *vm, bool hold);
uint64_t kap_snap_mem_size(const struct kap_snap *s);
/*
 * Parses and checks a state file's bytes (buf, malloc'd, owned by the result or freed on
 * failure); what names them in errors ("state file PATH").
 */
int kap_snap_parse(uint8_t *buf, size_t len, const char *what, struct kap_snap **out,
		   struct kapsel_error **err);
/* The state file's bytes of the paused VM into *buf (malloc'd): what migrate.c sends. */
int kap_snap_state(struct kap_vm *vm, uint8_t **buf, size_t *len, struct kapsel_error **err);
/* The CONFIG section's text ("key=value\n" lines) for this VM; malloc'd, NULL on ENOMEM. */
char *kap_snap_config_text(const struct kap_vm *vm);

/* ---- live migration (migrate.c; docs/vm.md, Live migration) ---- */

struct kap_migrate_params {
	const char *dest;	     /* "unix:PATH" or "tcp:127.0.0.1:PORT" */
	uint64_t max_downtime_ms;    /* the stop-and-copy's target; 0: the default */
	unsigned int max_iterations; /* pre-copy rounds at most; 0: the default */
	int fd; /* the connection to dest, dialled by the API client; -1: the VMM dials */
};
/*
 * Starts migrating the VM to p->dest on a thread of its own (API thread). -EBUSY when one is
 * running; the address is checked (and a non-loopback one refused) before it starts. Takes
 * p->fd (closed on failure); a jailed VMM needs one.
 */
int kap_migrate_start(struct kap_vm *vm, const struct kap_migrate_params *p,
		      struct kapsel_error **err);
/* Asks the running migration to stop; -ENOENT when none is running. */
int kap_migrate_cancel(struct kap_vm *vm, struct kapsel_error **err);
/* The migration's state as a JSON object's text (malloc'd): GET /migrate. */
char *kap_migrate_status_json(struct kap_vm *vm);
/* Joins the migration thread and frees it (teardown). */
void kap_migrate_destroy(struct kap_vm *vm);
/*
 * The destination: checks addr ("unix:PATH" or "tcp:127.0.0.1:PORT") and listens on it;
 * the fd goes to vm->incoming_fd. Before the machine is built, so a bad address costs nothing.
 */
int kap_migrate_listen(struct kap_vm *vm, const char *addr, struct kapsel_error **err);
/*
 * Accepts one source, checks its handshake against this VM's config, receives RAM and the
 * machine state into the built (not yet started) VM and keeps the connection for
 * kap_migrate_ack. signal_fd ends the wait on SIGINT/SIGTERM. Nothing of the VM runs when it
 * fails.
 */
int kap_migrate_incoming(struct kap_vm *vm, int signal_fd, struct kapsel_error **err);
/*
 * Tells the source the guest runs here now (it then ends); called just before the vCPUs
 * start. A failure means the source keeps the guest: this VM must not start.
 */
int kap_migrate_ack(struct kap_vm *vm, struct kapsel_error **err);
/* Tells the source why this side failed after loading (it resumes the guest). */
void kap_migrate_nak(struct kap_vm *vm, const char *why);
/* Closes the listening socket, removes its file (unix), refuses a source still waiting. */
void kap_migrate_unlisten(struct kap_vm *vm);

/* ---- the control API (api.c) ---- */

/* Creates the VM's directory and socket and starts the API thread (when cfg asks for it). */
int kap_api_start(struct kap_vm *vm, struct kapsel_error **err);
/* Starts the API thread when kap_api_start left it to the caller (a jailed VM: after the jail). */
int kap_api_run(struct kap_vm *vm, struct kapsel_error **err);
/* Stops the thread, removes the socket and the VM's directory. Safe to call when not started. */
void kap_api_stop(struct kap_vm *vm);

/* Ends the VM (from any thread). fault: a one-line message for KAP_VM_FAULT, else NULL. */
void kap_vm_request_exit(struct kap_vm *vm, enum kap_vm_end end, int status, const char *fault);
/* Sets an ISA interrupt line of the in-kernel PIC/IOAPIC. */
void kap_vm_set_irq(struct kap_vm *vm, unsigned int irq, int level);
/* virtio's notification paths (issue 6): a guest write to addr signals fd; fd raises gsi. */
int kap_vm_ioeventfd(struct kap_vm *vm, uint64_t addr, unsigned int len, bool pio, int fd,
		     struct kapsel_error **err);
/* The same, only for writes of the value datamatch (virtio-mmio's per-queue QueueNotify). */
int kap_vm_ioeventfd_match(struct kap_vm *vm, uint64_t addr, unsigned int len, bool pio, int fd,
			   uint64_t datamatch, struct kapsel_error **err);
int kap_vm_irqfd(struct kap_vm *vm, unsigned int gsi, int fd, struct kapsel_error **err);
/*
 * A level-triggered line: a write to fd asserts gsi until the guest's EOI, which lowers it and
 * signals resample_fd; the device then asserts it again if its interrupt is still pending.
 */
int kap_vm_irqfd_level(struct kap_vm *vm, unsigned int gsi, int fd, int resample_fd,
		       struct kapsel_error **err);
/* Removes an ioeventfd kap_vm_ioeventfd registered (virtio-pci: the guest moved a BAR). */
void kap_vm_ioeventfd_del(struct kap_vm *vm, uint64_t addr, unsigned int len, int fd);
/* A fresh GSI above the IOAPIC's pins, for an MSI route. */
int kap_vm_alloc_gsi(struct kap_vm *vm, unsigned int *gsi, struct kapsel_error **err);
/* Points gsi at the MSI message (addr, data) (KVM_SET_GSI_ROUTING); any thread. */
int kap_vm_msi_route(struct kap_vm *vm, unsigned int gsi, uint64_t addr, uint32_t data,
		     struct kapsel_error **err);

/* Monotonic milliseconds, for rate limits. */
int64_t kap_vmm_now_ms(void);
