using System.Runtime.CompilerServices;

namespace Virtio.Ring.Memory;

/// <summary>
/// The guest memory region a device last found a buffer in. Most chains live in one region, so a translation
/// is one subtract and two compares; a miss asks <see cref="GuestMemory"/> and remembers the new region. Lives
/// inside the device's private state, so only the device thread reads and writes it.
/// </summary>
internal unsafe struct RegionCache
{
    private ulong _gpa;
    private ulong _length;
    private byte* _host;
    private int _index;

    /// <summary>Guest physical address of the cached region (0 with length 0 before the first hit).</summary>
    public readonly ulong Gpa => _gpa;

    /// <summary>Length of the cached region; 0 means nothing is cached, so every range misses.</summary>
    public readonly ulong Length => _length;

    /// <summary>Host address of the cached region's first byte.</summary>
    public readonly byte* Host => _host;

    /// <summary>The cached region's index in <see cref="GuestMemory"/> (meaningless while nothing is cached).</summary>
    public readonly int Index => _index;

    /// <summary>Host address of a guest range inside one region, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Translate(GuestMemory memory, ulong gpa, ulong length)
    {
        ulong offset = gpa - _gpa; // wraps to a huge value below the region
        return offset < _length && length <= _length - offset ? _host + offset : Miss(memory, gpa, length);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* Miss(GuestMemory memory, ulong gpa, ulong length)
    {
        byte* host = memory.TranslateOrNull(gpa, length);
        if (host != null && memory.TryFindRegion(gpa, out GuestRegion region, out int index))
        {
            _gpa = region.Gpa;
            _length = region.Length;
            _host = region.Host;
            _index = index;
        }

        return host;
    }
}
