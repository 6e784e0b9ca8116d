/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test=kbd: the i8042 and the PS/2 keyboard behind it, polled as firmware and Linux drive
 * them, and IRQ 1 seen through the 8259A's poll command (OCW3 P=1: the highest pending
 * request, acknowledged as an INTA would, with interrupts off at the CPU).
 *   - Linux's i8042 probe: flush, command byte read/write, self test 0x55, interface test 0x00;
 *     then atkbd's identify (0xFA 0xAB 0x41 while translating, 0xAB 0x83 when not), 0xF5,
 *     0xED/0xF3 with their parameters, 0xF4;
 *   - SeaBIOS's keyboard_init: reset 0xFF answers 0xFA then 0xAA; scan set 2 through 0xF0;
 *   - echo 0xEE, an unknown command answered 0xFE, scan-set query;
 *   - a disabled keyboard clock (0xAD) holds the keyboard's bytes back until 0xAE, and a
 *     controller reply overtakes a keyboard byte without losing it;
 *   - the aux port: 0xA7/0xA8 toggle the command byte's bit 5, 0xA9 answers 0x00, loopback
 *     (0xD3) comes back as aux data, and a byte for the mouse (0xD4) is answered 0xFE with
 *     the timeout bit: no mouse;
 *   - IRQ 1 per byte (an edge for each of identify's three) with the command byte's bit 0 set,
 *     none with it clear.
 */
#define KBC_DATA   0x60
#define KBC_STATUS 0x64

static int kbc_wait_full(void)
{
	for (int i = 0; i < 1000; i++)
		if (inb(KBC_STATUS) & 1)
			return 1;
	return 0;
}

static uint8_t kbc_read(const char *what)
{
	if (!kbc_wait_full()) {
		puts_("kbd: no byte for ");
		puts_(what);
		putc_('\n');
		fail("kbd: output buffer stayed empty");
	}
	return inb(KBC_DATA);
}

static void kbc_expect(uint8_t want, const char *what)
{
	uint8_t got = kbc_read(what);
	if (got != want) {
		puts_("kbd: ");
		puts_(what);
		puts_(": got ");
		putx(got);
		puts_(" want ");
		putx(want);
		putc_('\n');
		fail("kbd: wrong byte");
	}
}

static void kbc_cmd(uint8_t c)
{
	outb(KBC_STATUS, c);
}

static void kbc_write_cb(uint8_t cb)
{
	kbc_cmd(0x60);
	outb(KBC_DATA, cb);
}

static void kbc_empty(const char *what)
{
	for (int i = 0; i < 8; i++)
		if (inb(KBC_STATUS) & 1) {
			puts_("kbd: unexpected byte ");
			putx(inb(KBC_DATA));
			puts_(" after ");
			puts_(what);
			putc_('\n');
			fail("kbd: output buffer not empty");
		}
}

/* The 8259A's poll command: 0x80 | IRQ when one is pending (and acknowledged), else no bit 7. */
static uint8_t pic_poll(void)
{
	outb(0x20, 0x0c);
	uint8_t v = inb(0x20);
	if (v & 0x80)
		outb(0x20, 0x20); /* non-specific EOI */
	return v;
}

static void irq1_expect(int want, const char *what)
{
	uint8_t v = pic_poll();
	int got = (v & 0x80) && (v & 7) == 1;
	if (got != want) {
		puts_("kbd: IRQ 1 ");
		puts_(want ? "missing" : "unexpected");
		puts_(" for ");
		puts_(what);
		puts_(" (poll ");
		putx(v);
		puts_(")\n");
		fail("kbd: IRQ 1");
	}
}

static void __attribute__((noreturn)) test_kbd(void)
{
	/* 8259A: vectors 0x20-0x2f, only IRQ 1 unmasked; the CPU's IF stays clear. */
	pic_init(0xfd);

	/* Linux's i8042_controller_check/init: flush, read the command byte, interrupts off. */
	for (int i = 0; i < 16 && (inb(KBC_STATUS) & 1); i++)
		inb(KBC_DATA);
	kbc_cmd(0x20);
	uint8_t cb = kbc_read("read command byte");
	CHECK(cb & 0x40, "kbd: command byte does not translate at power-on");
	kbc_write_cb(0x74); /* sys, both clocks off, translate, no interrupts */
	kbc_cmd(0x20);
	kbc_expect(0x74, "command byte written");
	kbc_cmd(0xaa);
	kbc_expect(0x55, "controller self test");
	kbc_cmd(0xab);
	kbc_expect(0x00, "keyboard interface test");
	puts_("kbd: controller ok\n");

	/* The keyboard clock is off: the reset's answers wait in the keyboard. */
	outb(KBC_DATA, 0xff);
	kbc_empty("reset with the keyboard clock off");
	kbc_cmd(0xae);
	kbc_expect(0xfa, "reset ack");
	kbc_expect(0xaa, "reset self test");
	kbc_empty("reset");
	outb(KBC_DATA, 0xf2);
	kbc_expect(0xfa, "identify ack");
	kbc_expect(0xab, "identify id 0");
	kbc_expect(0x41, "identify id 1 (translated)");
	kbc_write_cb(0x24); /* translation off */
	outb(KBC_DATA, 0xf2);
	kbc_expect(0xfa, "identify ack");
	kbc_expect(0xab, "identify id 0");
	kbc_expect(0x83, "identify id 1");
	/* SeaBIOS: 0xF5, scan set 2; then the query answers the set number. */
	outb(KBC_DATA, 0xf5);
	kbc_expect(0xfa, "disable ack");
	outb(KBC_DATA, 0xf0);
	kbc_expect(0xfa, "scan set ack");
	outb(KBC_DATA, 0x02);
	kbc_expect(0xfa, "scan set 2 ack");
	outb(KBC_DATA, 0xf0);
	kbc_expect(0xfa, "scan set query ack");
	outb(KBC_DATA, 0x00);
	kbc_expect(0xfa, "scan set query parameter ack");
	kbc_expect(0x02, "scan set number");
	outb(KBC_DATA, 0xf0);
	kbc_expect(0xfa, "scan set ack");
	outb(KBC_DATA, 0x07);
	kbc_expect(0xfe, "scan set 7 refused");
	/* atkbd: LEDs and typematic rate with their parameters, enable; echo; nonsense. */
	outb(KBC_DATA, 0xed);
	kbc_expect(0xfa, "set LEDs ack");
	outb(KBC_DATA, 0x02);
	kbc_expect(0xfa, "LEDs parameter ack");
	outb(KBC_DATA, 0xf3);
	kbc_expect(0xfa, "typematic ack");
	outb(KBC_DATA, 0x00);
	kbc_expect(0xfa, "typematic parameter ack");
	outb(KBC_DATA, 0xf4);
	kbc_expect(0xfa, "enable ack");
	outb(KBC_DATA, 0xf6);
	kbc_expect(0xfa, "defaults ack");
	outb(KBC_DATA, 0xee);
	kbc_expect(0xee, "echo");
	outb(KBC_DATA, 0x01);
	kbc_expect(0xfe, "unknown command");
	kbc_empty("keyboard commands");
	/* A controller reply overtakes the keyboard's identify, which then follows whole. */
	outb(KBC_DATA, 0xf2);
	kbc_wait_full();
	kbc_cmd(0x20);
	kbc_expect(0x24, "command byte ahead of the keyboard's bytes");
	kbc_expect(0xfa, "identify ack after a controller reply");
	kbc_expect(0xab, "identify id 0");
	kbc_expect(0x83, "identify id 1");
	kbc_empty("identify");
	puts_("kbd: keyboard ok\n");

	/* The aux port, with no mouse on it. */
	kbc_cmd(0xa8);
	kbc_cmd(0x20);
	CHECK(!(kbc_read("command byte") & 0x20), "kbd: 0xA8 left the aux clock off");
	kbc_cmd(0xa7);
	kbc_cmd(0x20);
	CHECK(kbc_read("command byte") & 0x20, "kbd: 0xA7 left the aux clock on");
	kbc_cmd(0xa9);
	kbc_expect(0x00, "aux interface test");
	kbc_cmd(0xd3);
	outb(KBC_DATA, 0x5a);
	CHECK(kbc_wait_full() && (inb(KBC_STATUS) & 0x20), "kbd: aux loopback not aux data");
	kbc_expect(0x5a, "aux loopback");
	kbc_cmd(0xd4);
	outb(KBC_DATA, 0xf2);
	CHECK(kbc_wait_full() && (inb(KBC_STATUS) & 0x60) == 0x60,
	      "kbd: a byte for the mouse not answered with aux data and the timeout bit");
	kbc_expect(0xfe, "mouse identify (no mouse)");
	kbc_empty("mouse identify");
	puts_("kbd: aux ok (no mouse)\n");

	/* IRQ 1: none with bit 0 clear; one per byte with it set. The power-on command byte had
	 * it set when the first reply above came, so that edge is still latched: take it. */
	for (int i = 0; i < 4 && (pic_poll() & 0x80); i++)
		;
	irq1_expect(0, "nothing");
	outb(KBC_DATA, 0xee);
	kbc_wait_full();
	irq1_expect(0, "echo with keyboard interrupts off");
	kbc_expect(0xee, "echo");
	kbc_write_cb(0x25);
	irq1_expect(0, "an empty output buffer");
	outb(KBC_DATA, 0xf2);
	static const uint8_t id[3] = {0xfa, 0xab, 0x83};
	for (int i = 0; i < 3; i++) {
		kbc_wait_full();
		irq1_expect(1, "an identify byte");
		kbc_expect(id[i], "identify with interrupts");
	}
	irq1_expect(0, "an emptied output buffer");
	kbc_cmd(0x20);
	kbc_wait_full();
	irq1_expect(1, "a controller reply");
	kbc_expect(0x25, "command byte");
	puts_("kbd: irq 1 ok\n");
	pass();
}
