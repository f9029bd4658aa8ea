// DP16KD, the ECP5's 18 Kbit true dual-port block RAM, for simulating ECP5 netlists: Yosys's
// cell models leave it a blackbox. Behaviour as Lattice's sysMEM usage guide (TN1264) gives it,
// for what Yosys's memory mapping (share/lattice/brams_map_16kd.v) instantiates:
//
// * DATA_WIDTH_A/B 1, 2, 4, 9 or 18, each port on its own; or 36, the pseudo dual-port mode
//   Yosys uses for 32/36-bit memories: port A writes 36-bit words ({DIB, DIA}; address
//   AD13..AD5, AD3..AD0 enable the four 9-bit quarters), port B reads them ({DOB, DOA}), word w
//   being rows 2w (bits 17:0) and 2w + 1 (bits 35:18). The block is 1024 words of 18 bits;
//   a 9-bit word a is half a & 1 of word a >> 1 (bits [8:0] or [17:9]); a 1, 2 or 4-bit word
//   lies in the 16 data bits (bits 8 and 17 are the parity bits of the 9-bit halves), word a
//   being sub-word a % (16 / width) of word a / (16 / width). At width 18, AD1 and AD0 are the
//   byte enables of a write (bits [17:9] and [8:0]); the address is AD13..AD4.
// * Reads and writes on the active clock edge (CLKxMUX "INV": the falling one) while CE is
//   high and CS2..CS0 equals CSDECODE. WRITEMODE NORMAL leaves the output as it was on a write,
//   WRITETHROUGH shows the written data, READBEFOREWRITE the data it replaced.
// * REGMODE NOREG: the output is the read latch; OUTREG adds a register clocked with OCE.
// * RST clears the output (latch and register): on the clock edge (RESETMODE SYNC) or at once
//   (ASYNC).
// * INITVAL_00 .. INITVAL_3F: 16 words of 20 bits each, word w in INITVAL_(w / 16) bits
//   [(w % 16) * 20 +: 18], as Yosys writes them.
//
// Not modelled: GSR, the cascading chip-select decode beyond CSDECODE, collisions of the two
// ports on one word in one cycle (undefined on the chip; here port B's write lands last).
module DP16KD (
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5,
        DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5,
         DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5,
        DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5,
         DOB4, DOB3, DOB2, DOB1, DOB0
);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter DIA17MUX = "DIA17";
  parameter DIA16MUX = "DIA16";
  parameter CLKAMUX = "CLKA";
  parameter CLKBMUX = "CLKB";
  parameter GSR = "ENABLED";
  parameter INITVAL_00 = 320'h0; parameter INITVAL_01 = 320'h0; parameter INITVAL_02 = 320'h0;
  parameter INITVAL_03 = 320'h0; parameter INITVAL_04 = 320'h0; parameter INITVAL_05 = 320'h0;
  parameter INITVAL_06 = 320'h0; parameter INITVAL_07 = 320'h0; parameter INITVAL_08 = 320'h0;
  parameter INITVAL_09 = 320'h0; parameter INITVAL_0A = 320'h0; parameter INITVAL_0B = 320'h0;
  parameter INITVAL_0C = 320'h0; parameter INITVAL_0D = 320'h0; parameter INITVAL_0E = 320'h0;
  parameter INITVAL_0F = 320'h0; parameter INITVAL_10 = 320'h0; parameter INITVAL_11 = 320'h0;
  parameter INITVAL_12 = 320'h0; parameter INITVAL_13 = 320'h0; parameter INITVAL_14 = 320'h0;
  parameter INITVAL_15 = 320'h0; parameter INITVAL_16 = 320'h0; parameter INITVAL_17 = 320'h0;
  parameter INITVAL_18 = 320'h0; parameter INITVAL_19 = 320'h0; parameter INITVAL_1A = 320'h0;
  parameter INITVAL_1B = 320'h0; parameter INITVAL_1C = 320'h0; parameter INITVAL_1D = 320'h0;
  parameter INITVAL_1E = 320'h0; parameter INITVAL_1F = 320'h0; parameter INITVAL_20 = 320'h0;
  parameter INITVAL_21 = 320'h0; parameter INITVAL_22 = 320'h0; parameter INITVAL_23 = 320'h0;
  parameter INITVAL_24 = 320'h0; parameter INITVAL_25 = 320'h0; parameter INITVAL_26 = 320'h0;
  parameter INITVAL_27 = 320'h0; parameter INITVAL_28 = 320'h0; parameter INITVAL_29 = 320'h0;
  parameter INITVAL_2A = 320'h0; parameter INITVAL_2B = 320'h0; parameter INITVAL_2C = 320'h0;
  parameter INITVAL_2D = 320'h0; parameter INITVAL_2E = 320'h0; parameter INITVAL_2F = 320'h0;
  parameter INITVAL_30 = 320'h0; parameter INITVAL_31 = 320'h0; parameter INITVAL_32 = 320'h0;
  parameter INITVAL_33 = 320'h0; parameter INITVAL_34 = 320'h0; parameter INITVAL_35 = 320'h0;
  parameter INITVAL_36 = 320'h0; parameter INITVAL_37 = 320'h0; parameter INITVAL_38 = 320'h0;
  parameter INITVAL_39 = 320'h0; parameter INITVAL_3A = 320'h0; parameter INITVAL_3B = 320'h0;
  parameter INITVAL_3C = 320'h0; parameter INITVAL_3D = 320'h0; parameter INITVAL_3E = 320'h0;
  parameter INITVAL_3F = 320'h0;
  parameter INITVAL_DATA = "";  // accepted, unused

  localparam [20479:0] INIT = {
    INITVAL_3F, INITVAL_3E, INITVAL_3D, INITVAL_3C, INITVAL_3B, INITVAL_3A, INITVAL_39,
    INITVAL_38, INITVAL_37, INITVAL_36, INITVAL_35, INITVAL_34, INITVAL_33, INITVAL_32,
    INITVAL_31, INITVAL_30, INITVAL_2F, INITVAL_2E, INITVAL_2D, INITVAL_2C, INITVAL_2B,
    INITVAL_2A, INITVAL_29, INITVAL_28, INITVAL_27, INITVAL_26, INITVAL_25, INITVAL_24,
    INITVAL_23, INITVAL_22, INITVAL_21, INITVAL_20, INITVAL_1F, INITVAL_1E, INITVAL_1D,
    INITVAL_1C, INITVAL_1B, INITVAL_1A, INITVAL_19, INITVAL_18, INITVAL_17, INITVAL_16,
    INITVAL_15, INITVAL_14, INITVAL_13, INITVAL_12, INITVAL_11, INITVAL_10, INITVAL_0F,
    INITVAL_0E, INITVAL_0D, INITVAL_0C, INITVAL_0B, INITVAL_0A, INITVAL_09, INITVAL_08,
    INITVAL_07, INITVAL_06, INITVAL_05, INITVAL_04, INITVAL_03, INITVAL_02, INITVAL_01,
    INITVAL_00};

  reg [17:0] mem [0:1023];
  integer w;
  initial for (w = 0; w < 1024; w = w + 1) mem[w] = INIT[w * 20 +: 18];

  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7,
                     DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7,
                     DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2,
                     ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2,
                     ADB1, ADB0};

  // The bit of the 18-bit word that data bit k (0..15) of a 1, 2 or 4-bit port lies on.
  function integer data_bit(input integer k);
    data_bit = k < 8 ? k : k + 1;
  endfunction

  // Which sub-word of its row an address of a 1, 2 or 4-bit port selects: AD3..AD0 without
  // the low address bits that port does not use (none at width 1, AD0 at 2, AD1..AD0 at 4).
  function integer sub_word(input [13:0] ad, input integer width);
    sub_word = width == 1 ? ad[3:0] : width == 2 ? ad[3:1] : ad[3:2];
  endfunction

  // Read: the port's word at `ad` out of its row, zero-extended to 18 bits.
  function [17:0] slice(input [17:0] row, input [13:0] ad, input integer width);
    integer i;
    begin
      slice = 0;
      if (width == 18) slice = row;
      else if (width == 9) slice = ad[3] ? row[17:9] : row[8:0];
      else for (i = 0; i < width; i = i + 1)
        slice[i] = row[data_bit(sub_word(ad, width) * width + i)];
    end
  endfunction

  // Write: `row` with the port's `data` at `ad` in it (at width 18, AD1/AD0 enable the halves).
  function [17:0] merge(input [17:0] row, input [13:0] ad, input [17:0] data,
                        input integer width);
    integer i;
    begin
      merge = row;
      if (width == 18) begin
        if (ad[0]) merge[8:0] = data[8:0];
        if (ad[1]) merge[17:9] = data[17:9];
      end else if (width == 9) begin
        if (ad[3]) merge[17:9] = data[8:0];
        else merge[8:0] = data[8:0];
      end else for (i = 0; i < width; i = i + 1)
        merge[data_bit(sub_word(ad, width) * width + i)] = data[i];
    end
  endfunction

  // The row (18-bit word) an address falls in, at every width: AD13..AD4.
  function [9:0] row_index(input [13:0] ad, input integer width);
    row_index = ad[13:4];
  endfunction

  wire clka = CLKAMUX == "INV" ? ~CLKA : CLKA;
  wire clkb = CLKBMUX == "INV" ? ~CLKB : CLKB;
  wire sela = CEA && {CSA2, CSA1, CSA0} == csdecode(CSDECODE_A);
  wire selb = CEB && {CSB2, CSB1, CSB0} == csdecode(CSDECODE_B);

  // CSDECODE_x is a string "0bxyz": the chip select that enables the port.
  function [2:0] csdecode(input [8*5-1:0] text);
    csdecode = {text[16], text[8], text[0]};
  endfunction

  reg [17:0] latch_a = 0, latch_b = 0, reg_a = 0, reg_b = 0;
  wire async = RESETMODE == "ASYNC";

  wire [35:0] di36 = {dib, dia};
  wire [9:0] wrow = {ada[13:5], 1'b0};

  always @(posedge clka or posedge (async && RSTA)) begin
    if (RSTA && (async || sela)) begin
      latch_a <= 0;
      reg_a <= 0;
    end else if (DATA_WIDTH_A == 36) begin
      if (sela && WEA) begin
        if (ada[0]) mem[wrow][8:0] <= di36[8:0];
        if (ada[1]) mem[wrow][17:9] <= di36[17:9];
        if (ada[2]) mem[wrow | 10'd1][8:0] <= di36[26:18];
        if (ada[3]) mem[wrow | 10'd1][17:9] <= di36[35:27];
      end
    end else begin
      if (sela) begin
        if (WEA) begin
          mem[row_index(ada, DATA_WIDTH_A)] <= merge(mem[row_index(ada, DATA_WIDTH_A)], ada,
                                                     dia, DATA_WIDTH_A);
          if (WRITEMODE_A == "WRITETHROUGH")
            latch_a <= slice(merge(mem[row_index(ada, DATA_WIDTH_A)], ada, dia, DATA_WIDTH_A),
                             ada, DATA_WIDTH_A);
          else if (WRITEMODE_A == "READBEFOREWRITE")
            latch_a <= slice(mem[row_index(ada, DATA_WIDTH_A)], ada, DATA_WIDTH_A);
        end else
          latch_a <= slice(mem[row_index(ada, DATA_WIDTH_A)], ada, DATA_WIDTH_A);
      end
      if (OCEA) reg_a <= latch_a;
    end
  end

  reg [35:0] latch_b36 = 0, reg_b36 = 0;
  wire [9:0] rrow = {adb[13:5], 1'b0};

  always @(posedge clkb or posedge (async && RSTB)) begin
    if (RSTB && (async || selb)) begin
      latch_b <= 0;
      reg_b <= 0;
      latch_b36 <= 0;
      reg_b36 <= 0;
    end else if (DATA_WIDTH_B == 36) begin
      if (selb) latch_b36 <= {mem[rrow | 10'd1], mem[rrow]};
      if (OCEB) reg_b36 <= latch_b36;
    end else begin
      if (selb) begin
        if (WEB) begin
          mem[row_index(adb, DATA_WIDTH_B)] <= merge(mem[row_index(adb, DATA_WIDTH_B)], adb,
                                                     dib, DATA_WIDTH_B);
          if (WRITEMODE_B == "WRITETHROUGH")
            latch_b <= slice(merge(mem[row_index(adb, DATA_WIDTH_B)], adb, dib, DATA_WIDTH_B),
                             adb, DATA_WIDTH_B);
          else if (WRITEMODE_B == "READBEFOREWRITE")
            latch_b <= slice(mem[row_index(adb, DATA_WIDTH_B)], adb, DATA_WIDTH_B);
        end else
          latch_b <= slice(mem[row_index(adb, DATA_WIDTH_B)], adb, DATA_WIDTH_B);
      end
      if (OCEB) reg_b <= latch_b;
    end
  end

  wire [35:0] do36 = REGMODE_B == "OUTREG" ? reg_b36 : latch_b36;
  wire [17:0] doa = DATA_WIDTH_B == 36 ? do36[17:0] : REGMODE_A == "OUTREG" ? reg_a : latch_a;
  wire [17:0] dob = DATA_WIDTH_B == 36 ? do36[35:18] : REGMODE_B == "OUTREG" ? reg_b : latch_b;
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5,
          DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5,
          DOB4, DOB3, DOB2, DOB1, DOB0} = dob;
endmodule
