// The simulated device on a TCP socket with no Python in the loop: trine.sim.native's engine.
//
// The device's Verilog is compiled by Verilator into the class Vdevice (--prefix Vdevice), behind
// a wrapper module that trine.sim.native writes: it holds the device in reset for its first
// cycles itself (a reset input would put every flip-flop's next-state logic into the logic
// Verilator re-evaluates whenever an input may have changed, twice per cycle) and gives the
// link plain port names. This file is its clock, its link and a loopback TCP server, and
// behaves like trine.sim.bridge's SocketBridge under cocotb, so a socket:// client cannot tell
// the two apart:
//
// * byte mode (TRINE_UART undefined): bytes go into the byte stream in_data/in_valid/in_ready
//   (LinkedAccelerator's i_stream; one beat per cycle while it is ready) and come out of
//   out_data/out_valid (its o_stream, always ready).
// * UART mode (TRINE_UART): bytes are driven on the rx pin as 8N1 at `divisor` cycles per
//   bit, and tx is sampled mid-bit from the start bit's falling edge.
//
// One client at a time. Simulated time moves only while there is work: bytes queued or on the
// line, or a complete request not yet answered (both directions are cut into frames by
// frames.h to know). It then runs in stretches of at most `chunk` cycles, each sized to take
// about `chunk-s` seconds of wall time (or until the input queue has drained or an answer is
// complete), and reads every client in between, so that the clients are read every few
// milliseconds however slow the model (a gate-level netlist runs a hundred times slower than
// the RTL). Every new client, and every client's bytes that came after it paused for more than
// `pause` seconds, are preceded by a quiet line of the device's inter-byte timeout plus a
// margin, so that a partial frame left behind is dropped as on a board. The pauses are taken
// from the kernel's arrival times of the bytes, not from when the harness got to them: a quiet
// line that takes longer than the host's pause does not run the bytes on both sides together
// (the rules of trine.sim.clients). A new client also waits until the device has answered the previous client's last
// request (or gave up on it after `max-quiet` cycles), and whatever that produces is discarded.
//
// It stops on SIGTERM or SIGINT, when the process that started it is gone (PR_SET_PDEATHSIG and
// --parent-pid), when --stop-file appears, and, with --once, after the first client.
// With --stats FILE it appends one JSON line per client (the keys of the bridge's SessionStats).
// Built with TRINE_TRACE it writes every simulated cycle to an FST file (--trace FILE).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "Vdevice.h"
#include "frames.h"
#include "verilated.h"
#ifdef TRINE_TRACE
#include "verilated_fst_c.h"
#endif

namespace {

#ifndef TRINE_RESET_CYCLES
#define TRINE_RESET_CYCLES 4  // the wrapper's reset, as trine.sim.device_tb's
#endif
constexpr int RESET_CYCLES = TRINE_RESET_CYCLES;
constexpr int SILENCE_MARGIN = 64;  // as trine.sim.bridge.SILENCE_MARGIN

volatile sig_atomic_t g_signalled = 0;

void on_signal(int) { g_signalled = 1; }

double seconds(clockid_t clock) {
    timespec ts;
    clock_gettime(clock, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double now_s() { return seconds(CLOCK_MONOTONIC); }
// This process's CPU time: the simulation's own cost, whatever else runs on the machine.
double cpu_s() { return seconds(CLOCK_PROCESS_CPUTIME_ID); }

struct Options {
    std::string host = "127.0.0.1";
    int port = 0;
    bool once = false;
    std::string ready_file, stats_file, stop_file, trace_file, label = "native";
    long parent_pid = 0;
    long divisor = 4;
    long timeout_cycles = 2560;
    long long max_quiet_cycles = 1000000;
    long chunk_cycles = 512;  // at most, between two reads of the clients
    double chunk_s = 0.005;   // wall time a stretch of simulated time is sized to take
    double pause_s = 0.02;
    double poll_s = 0.05;
    long period_ps = 83334;
};

[[noreturn]] void usage_error(const char* what) {
    std::fprintf(stderr, "harness: %s\n", what);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage_error(("missing value after " + a).c_str());
            return argv[++i];
        };
        if (a == "--host") o.host = value();
        else if (a == "--port") o.port = std::atoi(value().c_str());
        else if (a == "--once") o.once = true;
        else if (a == "--ready-file") o.ready_file = value();
        else if (a == "--stats") o.stats_file = value();
        else if (a == "--stop-file") o.stop_file = value();
        else if (a == "--trace") o.trace_file = value();
        else if (a == "--label") o.label = value();
        else if (a == "--parent-pid") o.parent_pid = std::atol(value().c_str());
        else if (a == "--divisor") o.divisor = std::atol(value().c_str());
        else if (a == "--timeout-cycles") o.timeout_cycles = std::atol(value().c_str());
        else if (a == "--max-quiet-cycles") o.max_quiet_cycles = std::atoll(value().c_str());
        else if (a == "--chunk-cycles") o.chunk_cycles = std::atol(value().c_str());
        else if (a == "--chunk-s") o.chunk_s = std::atof(value().c_str());
        else if (a == "--pause-s") o.pause_s = std::atof(value().c_str());
        else if (a == "--poll-s") o.poll_s = std::atof(value().c_str());
        else if (a == "--period-ps") o.period_ps = std::atol(value().c_str());
        else usage_error(("unknown option " + a).c_str());
    }
    if (o.divisor < 1 || o.chunk_cycles < 1 || o.period_ps < 2)
        usage_error("divisor, chunk cycles and period must be positive");
#ifndef TRINE_TRACE
    if (!o.trace_file.empty()) usage_error("this build has no tracing (build it with trace=True)");
#endif
    return o;
}

// The device, its clock and its link. `step()` is one clock cycle: the inputs change on the
// falling edge, the design settles, the rising edge is applied and the outputs are read.
class Device {
  public:
    explicit Device(const Options& o) : opt_(o) {
        ctx_ = std::make_unique<VerilatedContext>();
#ifdef TRINE_TRACE
        if (!o.trace_file.empty()) ctx_->traceEverOn(true);
#endif
        top_ = std::make_unique<Vdevice>(ctx_.get(), "device");
#ifdef TRINE_TRACE
        if (!o.trace_file.empty()) {
            trace_ = std::make_unique<VerilatedFstC>();
            top_->trace(trace_.get(), 99);
            trace_->open(o.trace_file.c_str());
        }
#endif
#ifdef TRINE_UART
        top_->rx = 1;
#else
        top_->in_valid = 0;
        top_->out_ready = 1;
#endif
        top_->clk = 0;
        for (int i = 0; i < RESET_CYCLES; i++) step();
        cycle = 0;
    }

    ~Device() {
        top_->final();
#ifdef TRINE_TRACE
        if (trace_) trace_->close();
#endif
    }

    void send(const uint8_t* data, size_t n) { queue_.insert(queue_.end(), data, data + n); }

#ifdef TRINE_UART
    bool busy() const { return !queue_.empty() || tx_bit_ >= 0 || rx_left_ >= 0; }
#else
    bool busy() const { return !queue_.empty() || offering_; }
#endif

    // Simulates up to `cycles` cycles, or fewer once `wake` is set (by drained() or an answer)
    // with until_woken.
    void run(long long cycles, bool until_woken = true) {
        wake = false;
        for (long long i = 0; i < cycles && !(until_woken && wake); i++) step();
    }

    uint64_t cycle = 0;
    bool wake = false;
    std::vector<uint8_t> out;  // bytes the device sent, not yet taken by the bridge
    trine::FrameCounter answers;  // cuts them into frames
    uint64_t answer_count = 0;    // complete answers since the last reset_answers()
    uint64_t last_byte_cycle = 0, last_answer_cycle = 0;

    void reset_answers() {
        answers.reset();
        answer_count = 0;
    }

  private:
    void dump() {
#ifdef TRINE_TRACE
        if (trace_) trace_->dump(ctx_->time());
#endif
    }

    void step() {
#ifdef TRINE_UART
        drive_rx();
#else
        if (!offering_ && !queue_.empty()) {
            offer_ = queue_.front();
            queue_.pop_front();
            offering_ = true;
        }
        top_->in_valid = offering_;
        top_->in_data = offer_;
#endif
        top_->clk = 0;
        top_->eval();
        dump();
        ctx_->timeInc(opt_.period_ps / 2);
#ifndef TRINE_UART
        const bool taken = offering_ && top_->in_ready;
        const bool answered = top_->out_valid;
        const uint8_t byte = top_->out_data;
#endif
        top_->clk = 1;
        top_->eval();
        dump();
        ctx_->timeInc(opt_.period_ps / 2);
        cycle++;
#ifdef TRINE_UART
        sample_tx();
#else
        if (taken) {
            offering_ = false;
            if (queue_.empty()) wake = true;  // drained
        }
        if (answered) on_byte(byte);
#endif
    }

    // Every byte the device sends; a complete answer ends the current run().
    void on_byte(uint8_t byte) {
        out.push_back(byte);
        last_byte_cycle = cycle;
        if (answers.feed(&byte, 1).frames) {
            answer_count++;
            last_answer_cycle = cycle;
            wake = true;
        }
    }

#ifdef TRINE_UART
    // 8N1 on rx: start bit, 8 data bits LSB first, stop bit, `divisor` cycles each.
    void drive_rx() {
        if (tx_bit_ < 0) {
            if (queue_.empty()) return;
            frame_ = (uint16_t(queue_.front()) << 1) | (1u << 9);
            queue_.pop_front();
            tx_bit_ = 0;
            tx_left_ = opt_.divisor;
        }
        top_->rx = (frame_ >> tx_bit_) & 1;
        if (--tx_left_ == 0) {
            tx_left_ = opt_.divisor;
            if (++tx_bit_ == 10) {
                tx_bit_ = -1;
                if (queue_.empty()) wake = true;  // drained
            }
        }
    }

    // tx sampled after each rising edge: a falling edge starts a byte; the start bit is checked
    // half a bit later and every bit after that a whole bit later.
    void sample_tx() {
        const int tx = top_->tx;
        if (rx_left_ < 0) {
            if (last_tx_ == 1 && tx == 0) {
                rx_left_ = opt_.divisor / 2 - 1;
                rx_bit_ = 0;
                rx_byte_ = 0;
            }
        } else if (rx_left_ > 0) {
            rx_left_--;
        } else if (rx_bit_ == 0 && tx != 0) {
            rx_left_ = -1;  // not a start bit (the device never glitches; be safe)
        } else if (rx_bit_ < 9) {
            if (rx_bit_ > 0) rx_byte_ |= tx << (rx_bit_ - 1);
            rx_bit_++;
            rx_left_ = opt_.divisor - 1;
        } else {
            rx_left_ = -1;
            if (tx == 1) {
                on_byte(uint8_t(rx_byte_));
            } else {
                framing_errors++;
                std::fprintf(stderr, "framing error: low stop bit after 0x%02x\n", rx_byte_);
            }
        }
        last_tx_ = tx;
    }

    int tx_bit_ = -1;  // the bit of frame_ on rx, -1 when idle
    long tx_left_ = 0;
    uint16_t frame_ = 0;
    long rx_left_ = -1;  // cycles to the next sample of tx, -1 when idle
    int rx_bit_ = 0, rx_byte_ = 0, last_tx_ = 1;

  public:
    unsigned long framing_errors = 0;

  private:
#else
    bool offering_ = false;
    uint8_t offer_ = 0;
#endif
    const Options& opt_;
    std::unique_ptr<VerilatedContext> ctx_;
    std::unique_ptr<Vdevice> top_;
#ifdef TRINE_TRACE
    std::unique_ptr<VerilatedFstC> trace_;
#endif
    std::deque<uint8_t> queue_;
};

struct SessionStats {
    unsigned long long bytes_in = 0, bytes_out = 0, requests = 0, answers = 0;
    unsigned long long cycles = 0, busy_cycles = 0;
    double busy_wall_s = 0, wall_s = 0, busy_cpu_s = 0;

    std::string json() const {
        char rate[32] = "null";
        if (busy_wall_s > 0 && busy_cycles > 0)
            std::snprintf(rate, sizeof rate, "%.0f", double(busy_cycles) / busy_wall_s);
        char cpu_rate[32] = "null";
        if (busy_cpu_s > 0 && busy_cycles > 0)
            std::snprintf(cpu_rate, sizeof cpu_rate, "%.0f", double(busy_cycles) / busy_cpu_s);
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "{\"bytes_in\": %llu, \"bytes_out\": %llu, \"requests\": %llu, "
                      "\"answers\": %llu, \"cycles\": %llu, \"busy_cycles\": %llu, "
                      "\"busy_wall_s\": %.4f, \"wall_s\": %.4f, \"cycles_per_s\": %s, "
                      "\"busy_cpu_s\": %.4f, \"cycles_per_cpu_s\": %s}",
                      bytes_in, bytes_out, requests, answers, cycles, busy_cycles, busy_wall_s,
                      wall_s, rate, busy_cpu_s, cpu_rate);
        return buf;
    }
};

// The realtime clock: the kernel stamps each received segment with it (SO_TIMESTAMPNS).
double wall_s() { return seconds(CLOCK_REALTIME); }

// A client's bytes read ahead of the device are bounded; beyond, the kernel's window holds it.
constexpr size_t READ_AHEAD_BYTES = size_t(1) << 20;
// The fewest cycles in a stretch of simulated time between two reads of the clients.
constexpr long MIN_CHUNK_CYCLES = 8;

// Bytes read at once from a client; after_pause: the client paused before them.
struct Chunk {
    std::vector<uint8_t> data;
    bool after_pause;
};

// Non-blocking, and what arrives stamped by the kernel with its arrival time.
void prepare_socket(int fd) {
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
}

// One connected client, as trine.sim.clients.Client: its chunks not yet given to the device,
// each marked if more than `pause` seconds passed before it since the client's previous bytes
// or, if later, since it was last sent something; the times are the kernel's arrival times.
class Client {
  public:
    Client(int fd, double pause_s) : fd(fd), pause_s_(pause_s) {
        int one = 1;
        prepare_socket(fd);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ~Client() { close(fd); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // Takes every byte waiting in the socket (up to READ_AHEAD_BYTES queued).
    void read() {
        uint8_t buf[1 << 16];
        while (!gone && queued < READ_AHEAD_BYTES) {
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
            iovec iov{buf, sizeof buf};
            msghdr m{};
            m.msg_iov = &iov;
            m.msg_iovlen = 1;
            m.msg_control = control;
            m.msg_controllen = sizeof control;
            const ssize_t n = recvmsg(fd, &m, 0);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) gone = true;
                return;
            }
            if (n == 0) {
                gone = true;
                return;
            }
            double t = -1;
            for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    timespec ts;
                    std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    t = double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
                }
            }
            arrived(t < 0 ? wall_s() : t, buf, size_t(n));
        }
    }

    // Bytes the socket took now (maybe 0); marks the client gone if it is.
    size_t send(const uint8_t* data, size_t n) {
        const ssize_t sent = ::send(fd, data, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) gone = true;
            return 0;
        }
        if (sent > 0) sent_at_.push_back(wall_s());
        return size_t(sent);
    }

    Chunk take() {
        Chunk c = std::move(chunks.front());
        chunks.pop_front();
        queued -= c.data.size();
        return c;
    }

    const int fd;
    std::deque<Chunk> chunks;
    size_t queued = 0;
    bool gone = false;

  private:
    void arrived(double t, const uint8_t* data, size_t n) {
        bool pause = false;
        if (have_last_) {
            double since = last_in_;
            while (!sent_at_.empty() && sent_at_.front() <= t) {
                since = std::max(since, sent_at_.front());
                sent_at_.pop_front();
            }
            pause = t - since > pause_s_;
        }
        have_last_ = true;
        last_in_ = t;
        chunks.push_back(Chunk{std::vector<uint8_t>(data, data + n), pause});
        queued += n;
    }

    const double pause_s_;
    bool have_last_ = false;
    double last_in_ = 0;
    std::deque<double> sent_at_;  // when it was sent something, since its last bytes
};

// The listening socket and every client connected to it, in order; the first is served. A new
// client is accepted and read at once, while the one before it is still served, so that its
// pauses are seen when they happen.
class Lobby {
  public:
    Lobby(int listener, double pause_s) : listener_(listener), pause_s_(pause_s) {
        prepare_socket(listener);  // stamped too, so that bytes sent before accept() are
    }

    // Accepts and reads whatever is waiting, after waiting at most `timeout_s` for something to
    // arrive (or, with `writing`, for the first client to take bytes).
    void poll(double timeout_s, bool writing) {
        if (timeout_s > 0) {
            std::vector<pollfd> fds{{listener_, POLLIN, 0}};
            for (size_t i = 0; i < clients.size(); i++) {
                const Client& c = *clients[i];
                short events = (!c.gone && c.queued < READ_AHEAD_BYTES) ? POLLIN : 0;
                if (i == 0 && writing) events |= POLLOUT;
                fds.push_back({c.fd, events, 0});
            }
            ::poll(fds.data(), fds.size(), int(timeout_s * 1000));
        }
        for (;;) {
            const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) break;
            clients.push_back(std::make_unique<Client>(fd, pause_s_));
        }
        for (auto& c : clients) c->read();
    }

    void close_first() { clients.pop_front(); }

    std::deque<std::unique_ptr<Client>> clients;

  private:
    const int listener_;
    const double pause_s_;
};

class Bridge {
  public:
    Bridge(const Options& o, Device& d) : opt_(o), dev_(d), chunk_(o.chunk_cycles) {}

    int serve() {
        int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener < 0) return fail("socket");
        int one = 1;
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(uint16_t(opt_.port));
        if (inet_pton(AF_INET, opt_.host.c_str(), &addr.sin_addr) != 1)
            return fail("bad host address");
        if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
            return fail("bind");
        if (listen(listener, 8) < 0) return fail("listen");
        socklen_t len = sizeof addr;
        getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
        const int port = ntohs(addr.sin_port);
        Lobby lobby(listener, opt_.pause_s);
        lobby_ = &lobby;
        if (!opt_.ready_file.empty()) {
            std::string tmp = opt_.ready_file + ".tmp";
            FILE* f = std::fopen(tmp.c_str(), "w");
            if (!f) return fail("ready file");
            std::fprintf(f, "%d\n", port);
            std::fclose(f);
            std::rename(tmp.c_str(), opt_.ready_file.c_str());
        }
        std::fprintf(stderr, "listening on %s:%d (%s mode)\n", opt_.host.c_str(), port,
#ifdef TRINE_UART
                     "uart"
#else
                     "byte"
#endif
        );
        std::fflush(stderr);
        for (int clients = 1;; clients++) {
            while (lobby.clients.empty() && !told_to_stop()) lobby.poll(opt_.poll_s, false);
            if (told_to_stop()) {
                std::fprintf(stderr, "told to stop, or the serving process is gone\n");
                lobby.clients.clear();
                close(listener);
                return 0;
            }
            client_ = lobby.clients.front().get();
            std::fprintf(stderr, "client %d connected\n", clients);
            SessionStats stats = session(*client_);
            client_ = nullptr;
            lobby.close_first();
            std::string summary = stats.json();
            std::fprintf(stderr, "client %d gone: %s\n", clients, summary.c_str());
            std::fflush(stderr);
            if (!opt_.stats_file.empty()) {
                if (FILE* f = std::fopen(opt_.stats_file.c_str(), "a")) {
                    std::fprintf(f, "%s\n", summary.c_str());
                    std::fclose(f);
                }
            }
            if (opt_.once || told_to_stop()) {
                lobby.clients.clear();
                close(listener);
                return 0;
            }
        }
    }

  private:
    int fail(const char* what) {
        std::fprintf(stderr, "harness: %s: %s\n", what, std::strerror(errno));
        return 1;
    }

    bool told_to_stop() const {
        if (g_signalled) return true;
        if (opt_.parent_pid != 0 && getppid() != opt_.parent_pid) return true;
        struct stat st;
        return !opt_.stop_file.empty() && stat(opt_.stop_file.c_str(), &st) == 0;
    }

    // Reads every client, and gives the one served what the device sent it.
    void io(double timeout_s = 0) {
        lobby_->poll(timeout_s, !pending_.empty());
        if (!pending_.empty() && client_ != nullptr) {
            const size_t sent = client_->send(pending_.data(), pending_.size());
            pending_.erase(pending_.begin(), pending_.begin() + long(sent));
        }
    }

    // Runs the device for up to `cycles` cycles (fewer once the input has drained or an answer
    // is complete, with until_woken; and no more than about chunk_s of wall time), collects what
    // it sent and reads the clients: however slow the model, they are read every few
    // milliseconds, so that their pauses are seen. The number of cycles simulated.
    long long simulate(long long cycles, bool until_woken = true) {
        const uint64_t answered = dev_.answer_count, c0 = dev_.cycle;
        const double t0 = now_s();
        dev_.run(std::max<long long>(1, std::min<long long>(cycles, chunk_)), until_woken);
        const double wall = now_s() - t0;
        const long long done = static_cast<long long>(dev_.cycle - c0);
        if (done > 0 && wall > 0) {
            const double fit = double(done) * opt_.chunk_s / wall;
            chunk_ = std::max<long long>(MIN_CHUNK_CYCLES,
                                         std::min<long long>(opt_.chunk_cycles, (long long)fit));
        }
        stats_.answers += dev_.answer_count - answered;
        if (!dev_.out.empty()) {
            stats_.bytes_out += dev_.out.size();
            last_active_cycle_ = dev_.last_byte_cycle;
            last_answer_cycle_ = dev_.last_answer_cycle;
            // what the device sends for a client that has gone is discarded
            if (!discarding_) pending_.insert(pending_.end(), dev_.out.begin(), dev_.out.end());
            dev_.out.clear();
        }
        io();
        return done;
    }

    bool quiet_too_long() const {
        return !dev_.busy() &&
               static_cast<long long>(dev_.cycle - last_active_cycle_) > opt_.max_quiet_cycles;
    }

    // A quiet line for longer than the device's inter-byte timeout (what it sends meanwhile is
    // received as usual).
    void silence() {
        long long left = opt_.timeout_cycles + SILENCE_MARGIN;
        while (left > 0) left -= simulate(left, false);
    }

    SessionStats session(Client& client) {
        stats_ = SessionStats();
        const uint64_t start_cycle = dev_.cycle;
        const double start_wall = now_s();
        // Let the device finish what the previous client started (at most its last request:
        // the device takes one frame at a time), then a quiet line so that a half-sent frame
        // is dropped; whatever the device sends meanwhile is discarded. The new client's
        // bytes are read meanwhile, with its pauses.
        discarding_ = true;
        pending_.clear();
        while (((outstanding_ && stats_.answers == 0) || dev_.busy()) && !quiet_too_long() &&
               !told_to_stop())
            simulate(opt_.chunk_cycles);
        outstanding_ = 0;
        silence();
        discarding_ = false;
        stats_ = SessionStats();
        pending_.clear();
        dev_.reset_answers();
        trine::FrameCounter requests;
        while (!told_to_stop()) {
            io();
            while (!client.chunks.empty()) {
                if (client.chunks.front().after_pause) {
                    if (dev_.busy()) break;  // the quiet line comes after the bytes before it
                    silence();               // the host paused: the line was quiet meanwhile
                    requests.reset();        // and the device has dropped a partial frame
                    client.chunks.front().after_pause = false;
                    continue;
                }
                const Chunk chunk = client.take();
                dev_.send(chunk.data.data(), chunk.data.size());
                stats_.bytes_in += chunk.data.size();
                auto r = requests.feed(chunk.data.data(), chunk.data.size());
                // every complete request is answered (a bad-CRC frame with a good header is
                // NAKed), or the device dropped it, which the quiet limit below finds
                if (unsigned complete = r.frames + r.errors) {
                    stats_.requests += complete;
                    outstanding_ += complete;
                    last_active_cycle_ = last_request_cycle_ = dev_.cycle;
                }
            }
            // What it sent before it left is on the line all the same (as a serial port drains
            // its output on close), and the next client waits for its answer.
            if (client.gone && client.chunks.empty()) break;
            bool awaiting = outstanding_ > stats_.answers;
            if (awaiting && quiet_too_long()) {
                std::fprintf(stderr, "no answer after %lld cycles; the device missed a frame?\n",
                             opt_.max_quiet_cycles);
                outstanding_ = stats_.answers;
                awaiting = false;
            }
            if (dev_.busy() || awaiting) {
                const double t0 = now_s(), cpu0 = cpu_s();
                const uint64_t c0 = dev_.cycle;
                simulate(opt_.chunk_cycles);
                stats_.busy_wall_s += now_s() - t0;
                stats_.busy_cpu_s += cpu_s() - cpu0;
                stats_.busy_cycles += dev_.cycle - c0;
            } else {
                io(opt_.poll_s);
            }
        }
        pending_.clear();
        // left for the next client's wait: whether the last request is still unanswered
        outstanding_ = last_request_cycle_ > last_answer_cycle_ ? 1 : 0;
        stats_.cycles = dev_.cycle - start_cycle;
        stats_.wall_s = now_s() - start_wall;
        return stats_;
    }

    const Options& opt_;
    Device& dev_;
    Lobby* lobby_ = nullptr;
    Client* client_ = nullptr;  // the one served
    long long chunk_;           // cycles per stretch, sized to take about chunk_s
    bool discarding_ = false;
    SessionStats stats_;
    std::vector<uint8_t> pending_;  // answer bytes not yet taken by the socket
    unsigned long long outstanding_ = 0;
    uint64_t last_active_cycle_ = 0, last_request_cycle_ = 0, last_answer_cycle_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse(argc, argv);
    // Stop with the process that started this one, even if it was killed.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (opt.parent_pid != 0 && getppid() != opt.parent_pid) return 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    Device device(opt);
    Bridge bridge(opt, device);
    return bridge.serve();
}
