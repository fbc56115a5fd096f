// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {ERC2981} from "@openzeppelin/contracts/token/common/ERC2981.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Initializable} from "@openzeppelin/contracts/proxy/utils/Initializable.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

/// @title The tickets of one event, as an ERC-721 collection.
/// @notice Deployed once as an implementation and then cloned (EIP-1167) per event by
/// `TicketFactory`, so every storage value is set in `initialize`, never in a constructor.
/// Token id = the ticket's serial. A token id can be minted once in the collection's life:
/// burning it does not free it, so a late mint retry cannot resurrect a refunded ticket.
/// @dev Mint cost is kept at a plain ERC-721 mint: no enumerable extension, no per-token
/// storage beyond the owner and balance; the policy check lives in `transferFrom`, which mints
/// never reach, and the supply counter is written once per batch.
contract EventTickets is ERC721, ERC2981, AccessControl, Initializable {
    using Strings for uint256;

    /// Mints tickets, marks them attended, burns them.
    bytes32 public constant MINTER_ROLE = keccak256("MINTER_ROLE");
    /// The platform's market operator: the only caller that may move tokens while transfers are
    /// locked, and every holder's pre-approved operator (holders' keys are custodial anyway).
    bytes32 public constant CUSTODIAN_ROLE = keccak256("CUSTODIAN_ROLE");
    /// Sets the transfer policy, royalty and metadata locations of the event.
    bytes32 public constant ORGANIZER_ROLE = keccak256("ORGANIZER_ROLE");

    /// Everything a new collection needs, in one struct so the factory call stays readable.
    struct InitParams {
        string name;
        string symbol;
        string baseURI;
        string contractURI;
        address admin;
        address minter;
        address custodian;
        address organizer;
        address royaltyReceiver;
        uint96 royaltyBps;
        uint64 eventEnd;
        bool transfersLocked;
    }

    error LengthMismatch(uint256 holders, uint256 tokenIds);
    error TokenAlreadyBurned(uint256 tokenId);
    error TransfersLocked(uint256 tokenId);

    /// ERC-4906: marketplaces refresh the token's metadata.
    event MetadataUpdate(uint256 _tokenId);
    event BatchMetadataUpdate(uint256 _fromTokenId, uint256 _toTokenId);
    /// ERC-7572: contract-level metadata moved.
    event ContractURIUpdated();
    event TransferPolicyChanged(bool transfersLocked, uint64 eventEnd);
    event Attended(uint256 indexed tokenId);

    string private _collectionName;
    string private _collectionSymbol;
    string private _baseTokenURI;
    string private _contractMetadataURI;
    // One slot: read and written once per batch mint.
    uint64 private _mintedCount;
    uint64 private _burnedCount;
    uint64 private _eventEnd;
    bool private _transfersLocked;
    // 256 token ids per word: sequential serials share a warm slot.
    mapping(uint256 => uint256) private _burnedBits;
    mapping(uint256 => uint256) private _attendedBits;

    constructor() ERC721("", "") {
        // The implementation itself is never used as a collection.
        _disableInitializers();
    }

    /// @notice Sets up a fresh clone; the factory calls it in the same transaction as the clone.
    function initialize(InitParams calldata p) external initializer {
        _collectionName = p.name;
        _collectionSymbol = p.symbol;
        _baseTokenURI = p.baseURI;
        _contractMetadataURI = p.contractURI;
        _eventEnd = p.eventEnd;
        _transfersLocked = p.transfersLocked;
        if (p.royaltyBps != 0) {
            _setDefaultRoyalty(p.royaltyReceiver, p.royaltyBps);
        }
        _grantRole(DEFAULT_ADMIN_ROLE, p.admin);
        _grantRole(MINTER_ROLE, p.minter);
        _grantRole(CUSTODIAN_ROLE, p.custodian);
        _grantRole(ORGANIZER_ROLE, p.organizer);
    }

    // ---- minting, burning, attendance (minter) ----

    /// @notice Mints `tokenIds[i]` to `to[i]` for every i in one transaction.
    /// Reverts as a whole if any id was ever minted before (invariant: one token per ticket).
    /// @dev `_mint`, not `_safeMint`: holders are custodial addresses, and the receiver check
    /// would cost a cold EXTCODESIZE per holder.
    function mintBatch(address[] calldata to, uint256[] calldata tokenIds) external onlyRole(MINTER_ROLE) {
        uint256 n = to.length;
        if (n != tokenIds.length) revert LengthMismatch(n, tokenIds.length);
        for (uint256 i; i < n;) {
            uint256 tokenId = tokenIds[i];
            if (_burnedBits[tokenId >> 8] & (1 << (tokenId & 0xff)) != 0) revert TokenAlreadyBurned(tokenId);
            _mint(to[i], tokenId);
            unchecked {
                ++i;
            }
        }
        unchecked {
            _mintedCount += uint64(n);
        }
    }

    /// @notice Destroys a ticket's token (refund, cancellation). Minter or custodian only.
    function burn(uint256 tokenId) external {
        address sender = _msgSender();
        if (!hasRole(MINTER_ROLE, sender) && !hasRole(CUSTODIAN_ROLE, sender)) {
            revert AccessControlUnauthorizedAccount(sender, MINTER_ROLE);
        }
        _burn(tokenId);
        _burnedBits[tokenId >> 8] |= 1 << (tokenId & 0xff);
        unchecked {
            _burnedCount += 1;
        }
    }

    /// @notice Records check-ins, many per transaction (a gate admits thousands an hour); each
    /// token's metadata switches to the attended variant. Ids without a token (burned by a
    /// refund meanwhile, or never minted) and tokens already attended are skipped, so one of
    /// them cannot hold up the others and a repeated call changes nothing.
    function markAttended(uint256[] calldata tokenIds) external onlyRole(MINTER_ROLE) {
        for (uint256 i = 0; i < tokenIds.length; ++i) {
            uint256 tokenId = tokenIds[i];
            uint256 bit = 1 << (tokenId & 0xff);
            uint256 word = _attendedBits[tokenId >> 8];
            if (word & bit != 0 || _ownerOf(tokenId) == address(0)) {
                continue;
            }
            _attendedBits[tokenId >> 8] = word | bit;
            emit Attended(tokenId);
            emit MetadataUpdate(tokenId);
        }
    }

    // ---- transfer policy ----

    /// @notice True while tokens may move only through the custodian: the organizer has
    /// locked transfers and the event has not ended (an `eventEnd` of 0 means "not set").
    function transfersLocked() public view returns (bool) {
        return _transfersLocked && (_eventEnd == 0 || block.timestamp < _eventEnd);
    }

    function eventEnd() external view returns (uint64) {
        return _eventEnd;
    }

    /// @dev Every public transfer path goes through here (`safeTransferFrom` calls it), mints
    /// and burns do not.
    function transferFrom(address from, address to, uint256 tokenId) public override {
        if (transfersLocked() && !hasRole(CUSTODIAN_ROLE, _msgSender())) revert TransfersLocked(tokenId);
        super.transferFrom(from, to, tokenId);
    }

    /// @dev The custodian moves tokens for holders (resale, gifts) without a per-holder approval
    /// transaction; the platform holds those holders' keys already.
    function isApprovedForAll(address owner, address operator) public view override returns (bool) {
        return hasRole(CUSTODIAN_ROLE, operator) || super.isApprovedForAll(owner, operator);
    }

    // ---- organizer settings ----

    function setTransferPolicy(bool locked, uint64 end) external onlyRole(ORGANIZER_ROLE) {
        _transfersLocked = locked;
        _eventEnd = end;
        emit TransferPolicyChanged(locked, end);
    }

    function setDefaultRoyalty(address receiver, uint96 bps) external onlyRole(ORGANIZER_ROLE) {
        if (bps == 0) {
            _deleteDefaultRoyalty();
        } else {
            _setDefaultRoyalty(receiver, bps);
        }
    }

    function setBaseURI(string calldata baseURI) external onlyRole(ORGANIZER_ROLE) {
        _baseTokenURI = baseURI;
        // ERC-4906: the whole range changed.
        emit BatchMetadataUpdate(0, type(uint256).max);
    }

    function setContractURI(string calldata uri) external onlyRole(ORGANIZER_ROLE) {
        _contractMetadataURI = uri;
        emit ContractURIUpdated();
    }

    // ---- reads ----

    function name() public view override returns (string memory) {
        return _collectionName;
    }

    function symbol() public view override returns (string memory) {
        return _collectionSymbol;
    }

    function contractURI() external view returns (string memory) {
        return _contractMetadataURI;
    }

    /// @notice `{base}{id}`, or `{base}{id}/attended` once the ticket was checked in.
    function tokenURI(uint256 tokenId) public view override returns (string memory) {
        _requireOwned(tokenId);
        string memory base = _baseTokenURI;
        if (bytes(base).length == 0) return "";
        string memory plain = string.concat(base, tokenId.toString());
        return isAttended(tokenId) ? string.concat(plain, "/attended") : plain;
    }

    /// @notice The holders of many tokens in one call, the zero address for an id without a
    /// token (never minted, or burned): how the platform reconciles a page of tickets without
    /// a round trip per token.
    function ownersOf(uint256[] calldata tokenIds) external view returns (address[] memory owners) {
        owners = new address[](tokenIds.length);
        for (uint256 i = 0; i < tokenIds.length; ++i) {
            owners[i] = _ownerOf(tokenIds[i]);
        }
    }

    function isAttended(uint256 tokenId) public view returns (bool) {
        return _attendedBits[tokenId >> 8] & (1 << (tokenId & 0xff)) != 0;
    }

    function isBurned(uint256 tokenId) external view returns (bool) {
        return _burnedBits[tokenId >> 8] & (1 << (tokenId & 0xff)) != 0;
    }

    /// @notice Tokens in existence: minted minus burned.
    function totalSupply() external view returns (uint256) {
        return uint256(_mintedCount) - uint256(_burnedCount);
    }

    function totalMinted() external view returns (uint256) {
        return _mintedCount;
    }

    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC721, ERC2981, AccessControl)
        returns (bool)
    {
        return interfaceId == bytes4(0x49064906) || super.supportsInterface(interfaceId);
    }
}
