// What the board gives an iCE40 design and Yosys's cell models cannot: trine.sim.netlist puts
// these in place of cells_sim.v's SB_IO and SB_PLL40_PAD to simulate a board build's netlist.
//
// SB_IO: a plain wire between pad and fabric. The board build uses unregistered pins only
// (Amaranth's io.Buffer: PIN_TYPE input 2'b01, output 4'b0110, or 4'b1010/4'b1001 with an
// output enable); trine.sim.netlist refuses a netlist with any other pin type. No tristate: a
// pin is driven by the harness or by the design, never both, and an output whose enable is low
// reads high (a UART line's idle level, which the USB-serial bridge's pull-up gives it).
module SB_IO (
    inout  PACKAGE_PIN,
    input  LATCH_INPUT_VALUE,
    input  CLOCK_ENABLE,
    input  INPUT_CLK,
    input  OUTPUT_CLK,
    input  OUTPUT_ENABLE,
    input  D_OUT_0,
    input  D_OUT_1,
    output D_IN_0,
    output D_IN_1
);
    parameter [5:0] PIN_TYPE = 6'b000000;
    parameter [0:0] PULLUP = 1'b0;
    parameter [0:0] NEG_TRIGGER = 1'b0;
    parameter IO_STANDARD = "SB_LVCMOS";
    generate
        if (PIN_TYPE[5:2] == 4'b0000) begin : input_pin
            assign D_IN_0 = PACKAGE_PIN;
            assign D_IN_1 = PACKAGE_PIN;
        end else begin : output_pin
            wire level = (PIN_TYPE[5:2] == 4'b0110 || OUTPUT_ENABLE) ? D_OUT_0 : 1'b1;
            assign PACKAGE_PIN = level;
            assign D_IN_0 = level;
            assign D_IN_1 = level;
        end
    endgenerate
endmodule

// SB_PLL40_PAD: the pad's clock passed straight through as the core clock, locked at once. The
// simulation's clock is therefore the PLL's output clock; the dividers are not modelled (the
// board build checks them: trine.flow.pll) and neither is the lock time.
module SB_PLL40_PAD (
    input        PACKAGEPIN,
    output       PLLOUTCORE,
    output       PLLOUTGLOBAL,
    input        EXTFEEDBACK,
    input  [7:0] DYNAMICDELAY,
    output       LOCK,
    input        BYPASS,
    input        RESETB,
    input        LATCHINPUTVALUE,
    output       SDO,
    input        SDI,
    input        SCLK
);
    parameter FEEDBACK_PATH = "SIMPLE";
    parameter DELAY_ADJUSTMENT_MODE_FEEDBACK = "FIXED";
    parameter DELAY_ADJUSTMENT_MODE_RELATIVE = "FIXED";
    parameter SHIFTREG_DIV_MODE = 1'b0;
    parameter FDA_FEEDBACK = 4'b0000;
    parameter FDA_RELATIVE = 4'b0000;
    parameter PLLOUT_SELECT = "GENCLK";
    parameter DIVR = 4'b0000;
    parameter DIVF = 7'b0000000;
    parameter DIVQ = 3'b000;
    parameter FILTER_RANGE = 3'b000;
    parameter ENABLE_ICEGATE = 1'b0;
    parameter TEST_MODE = 1'b0;
    parameter EXTERNAL_DIVIDE_FACTOR = 1;
    assign PLLOUTCORE = PACKAGEPIN;
    assign PLLOUTGLOBAL = PACKAGEPIN;
    assign LOCK = 1'b1;
    assign SDO = 1'b0;
endmodule

// SB_LUT4: Yosys's model as one indexed bit instead of its tree of vector multiplexers, which
// is several times slower in Verilator's code across the thousands of LUTs of a netlist. The
// same function for every 0/1 input (tests/test_netlist.py compares the two on Icarus).
module SB_LUT4 (
    output O,
    input  I0,
    input  I1,
    input  I2,
    input  I3
);
    parameter [15:0] LUT_INIT = 0;
    assign O = LUT_INIT[{I3, I2, I1, I0}];
endmodule
