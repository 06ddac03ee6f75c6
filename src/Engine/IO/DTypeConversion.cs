using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace WhereToEdit.Engine.IO;

/// <summary>Little-endian float16 / bfloat16 / float64 ⇄ float32 conversions.</summary>
internal static class DTypeConversion
{
    /// <summary>Bytes per element of a supported dtype.</summary>
    public static int SizeOf(TensorDType dtype) => dtype switch
    {
        TensorDType.F32 => 4,
        TensorDType.F16 => 2,
        TensorDType.BF16 => 2,
        TensorDType.F64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    internal static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("checkpoint I/O assumes a little-endian machine");
    }

    /// <summary>Converts little-endian <paramref name="src"/> bytes of <paramref name="dtype"/> into float32.</summary>
    public static void ToFloat32(ReadOnlySpan<byte> src, TensorDType dtype, Span<float> dst)
    {
        EnsureLittleEndian();
        if (src.Length != (long)dst.Length * SizeOf(dtype))
            throw new ArgumentException($"{src.Length} bytes of {dtype} do not make {dst.Length} elements");
        switch (dtype)
        {
            case TensorDType.F32:
                MemoryMarshal.Cast<byte, float>(src).CopyTo(dst);
                break;
            case TensorDType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst);
                break;
            case TensorDType.BF16:
            {
                var s = MemoryMarshal.Cast<byte, ushort>(src);
                var d = MemoryMarshal.Cast<float, uint>(dst);
                for (int i = 0; i < s.Length; i++) d[i] = (uint)s[i] << 16;
                break;
            }
            case TensorDType.F64:
            {
                var s = MemoryMarshal.Cast<byte, double>(src);
                for (int i = 0; i < s.Length; i++) dst[i] = (float)s[i];
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>Converts float32 to little-endian bytes of <paramref name="dtype"/> (round to nearest even).</summary>
    public static void FromFloat32(ReadOnlySpan<float> src, TensorDType dtype, Span<byte> dst)
    {
        EnsureLittleEndian();
        if (dst.Length != (long)src.Length * SizeOf(dtype))
            throw new ArgumentException($"{dst.Length} bytes cannot hold {src.Length} elements of {dtype}");
        switch (dtype)
        {
            case TensorDType.F32:
                MemoryMarshal.AsBytes(src).CopyTo(dst);
                break;
            case TensorDType.F16:
                TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst));
                break;
            case TensorDType.BF16:
            {
                var d = MemoryMarshal.Cast<byte, ushort>(dst);
                for (int i = 0; i < src.Length; i++) d[i] = ToBFloat16Bits(src[i]);
                break;
            }
            case TensorDType.F64:
            {
                var d = MemoryMarshal.Cast<byte, double>(dst);
                for (int i = 0; i < src.Length; i++) d[i] = src[i];
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(dtype));
        }
    }

    /// <summary>float32 → bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.</summary>
    public static ushort ToBFloat16Bits(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)(rounded >> 16);
    }

    public static float FromBFloat16Bits(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);
}
